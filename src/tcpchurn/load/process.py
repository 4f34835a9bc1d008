"""What a load engine does to its own process for the length of a run, and undoes after.

* RLIMIT_NOFILE soft limit raised to the hard one (KERNEL.md §I: EMFILE otherwise at
  ~1024 open connections; raising it needs no root).  Left raised: it only allows more.
* Timer slack 1 µs instead of the default 50 µs (prctl(2) ``PR_SET_TIMERSLACK``): the
  slack is otherwise the floor of every schedule lag.
* No cyclic-GC pauses: a full collection walks every object of the interpreter (numpy's
  included) for ~10-20 ms, seen as schedule-lag spikes.  The engine's hot path makes no
  reference cycles (everything is freed by refcount), so the collector is switched off,
  what exists is frozen out of its sight (``gc.freeze``), and the engine runs a
  young-generation pass at each interval's end.  Late connections at 28k/s: halved.
"""

from __future__ import annotations

import contextlib
import gc
import resource
from collections.abc import Iterator

from tcpchurn.libc import libc

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
