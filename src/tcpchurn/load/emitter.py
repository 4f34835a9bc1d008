"""A worker's interval output, off the load loop: encode, write to the pipe, recycle.

Why a thread: on this VM, memory a process has left alone for more than ~10 ms is slow
to touch again (a 1 MiB array summed in 46 us, or after a 0.25 s sleep in 1.3-9 ms one
hour and 0.18 ms the next: the host's doing; bench/cold_memory.py), and the
once-a-second work of an interval's end touches what nothing else touches: hdrh's
encoder and zlib, the spare histograms, the code of all of it.  Done in the load loop,
it stalled the schedule for
10-15 ms every second at 20k/s a worker: ~2% of the connections late, the lag p99 of a
whole run at 5-10 ms.  Here it runs while the loop sleeps (the C path and ``epoll``
release the GIL then), and the loop, woken, takes the GIL back within the switch
interval (:data:`SWITCH_S`).

Order is kept (one thread, one queue); an error in ``emit`` (the parent is gone:
``BrokenPipeError``) is raised in the load loop's thread at the next interval or at
:meth:`Emitter.close`.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable

from tcpchurn.load.stats import IntervalStats

#: the GIL switch interval while an emitter runs: how long the load loop, woken, may wait
#: for the emitter to let go of the GIL (CPython's default is 5 ms: as long as the stall
#: this module removes)
SWITCH_S = 0.0002


class Emitter:
    """Calls ``emit(st)`` then ``after(st)`` for each interval put, in a thread."""

    def __init__(self, emit: Callable[[IntervalStats], None],
                 after: Callable[[IntervalStats], None]) -> None:
        self._emit = emit
        self._after = after
        self._queue: queue.SimpleQueue[IntervalStats | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_S)
        self._thread = threading.Thread(target=self._run, name="tcpchurn-emit", daemon=True)
        self._thread.start()

    def put(self, st: IntervalStats) -> None:
        """Queue one interval (raises what an earlier ``emit`` raised)."""
        if self._error is not None:
            raise self._error
        self._queue.put(st)

    def close(self) -> None:
        """Wait until everything queued is out; raise what ``emit`` raised, if anything."""
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (st := self._queue.get()) is not None:
            try:
                self._emit(st)
                self._after(st)
            except BaseException as e:  # handed to the load loop's thread
                self._error = e
                return
