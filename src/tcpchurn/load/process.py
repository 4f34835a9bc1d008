"""What a load engine does to its own process for the length of a run, and undoes after.

* RLIMIT_NOFILE soft limit raised to the hard one (KERNEL.md §I: EMFILE otherwise at
  ~1024 open connections; raising it needs no root).  Left raised: it only allows more.
* Timer slack 1 µs instead of the default 50 µs (prctl(2) ``PR_SET_TIMERSLACK``): the
  slack is otherwise the floor of every schedule lag.
* The descriptor table grown before the start (:func:`reserve_fds`), so that opening
  sockets never waits for an RCU grace period in the run.
* No cyclic-GC pauses: a full collection walks every object of the interpreter (numpy's
  included) for ~10-20 ms, seen as schedule-lag spikes.  The engine's hot path makes no
  reference cycles (everything is freed by refcount), so the collector is switched off,
  what exists is frozen out of its sight (``gc.freeze``), and the engine runs a
  young-generation pass at each interval's end.  Late connections at 28k/s: halved.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import resource
from collections.abc import Iterator, MutableMapping

from tcpchurn.libc import libc

#: the variables by which numpy's BLAS libraries take their thread count, at load time
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread(env: MutableMapping[str, str]) -> None:
    """Have numpy's BLAS start no threads of its own in a process started with ``env``
    (or in this one, when numpy is not imported yet).

    OpenBLAS starts a thread per CPU but one when numpy is imported, and they spin for a
    while after any BLAS call: perf showed ``blas_thread_server`` at 3% of a saturated
    worker's CPU, and in ``tcpchurn run``'s own process the second thread took 10 of its
    44 ticks over 8 s at 20,000/s, a CPU that nginx on the same cores lacks.  Nothing in
    tcpchurn needs BLAS: its arrays are small.
    """
    for name in BLAS_THREAD_VARS:
        env[name] = "1"


PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30  # include/uapi/linux/prctl.h
TIMER_SLACK_NS = 1000


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (needs no root; KERNEL.md §I).

    Returns the new ``(soft, hard)``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


#: the most descriptors :func:`reserve_fds` makes room for (a table of 131,072 is 1 MiB of
#: pointers); past it the table still grows, as it does without this, during the run
RESERVE_FDS_MAX = 1 << 17


def reserve_fds(count: int) -> int:
    """Grow this process's descriptor table now, to hold descriptors ``0 .. count - 1``
    (at most the soft RLIMIT_NOFILE and :data:`RESERVE_FDS_MAX`); returns the size
    reserved, 0 if none was needed.  Nothing stays open.

    Why: the kernel grows the table by doubling it, and when the table is shared (a
    second thread: the engine's emitter) each growth waits for an RCU grace period in
    uninterruptible sleep (fs/file.c, ``expand_fdtable``: "make sure all fd_install()
    have seen resize_in_progress", ``synchronize_rcu()``), 8-18 ms on the test VM.  A
    worker opens its first hundreds of sockets within milliseconds of the start, so
    both workers slept so twice in the first 40 ms of a run (``perf sched timehist
    --state -g``: D in ``synchronize_rcu_normal <- expand_files <- alloc_fd``), and
    at 55,000/s against nginx the first 100 ms of every run had a lag p99 of 11-32 ms.
    A table never shrinks: grown here, before the emitter thread exists, it costs no
    grace period at all.  ``F_DUPFD`` takes the lowest free number at or above the one
    asked, so no open descriptor is touched.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = min(count, soft, RESERVE_FDS_MAX) - 1
    if top < 64:  # the table every process starts with (NR_OPEN_DEFAULT on 64-bit)
        return 0
    src = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, top))
    except OSError:  # EMFILE: every number from `top` up is taken; nothing to reserve
        return 0
    finally:
        os.close(src)
    return top + 1


def set_timer_slack(ns: int) -> int:
    """Set this thread's timer slack in nanoseconds; return the previous value."""
    c = libc()
    old = int(c.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0))
    c.prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0)
    return old


@contextlib.contextmanager
def tuned_for_load() -> Iterator[None]:
    """All of the above for the ``with`` block; slack and GC restored afterwards."""
    raise_nofile()
    old_slack = set_timer_slack(TIMER_SLACK_NS)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
        set_timer_slack(old_slack)
