"""The C library, for the few calls Python 3.11's ``os`` lacks (prctl, timerfd, setns,
sched_setattr, setrlimit of another process).

One handle, loaded once: the process's own symbols (``dlopen(NULL)``), which include
libc's.  Why not ``ctypes.util.find_library("c")``: it runs ``ldconfig -p`` in a
subprocess at every call (6 ms of a worker's start-up in ``perf sched``, several times
per worker), and it is not needed: the interpreter is linked against libc already.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library's functions, with ``errno`` kept for ``ctypes.get_errno()``."""
    return ctypes.CDLL(None, use_errno=True)
