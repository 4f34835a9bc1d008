"""The load engine: one process's share of the schedule, on raw non-blocking sockets.

Why not uvloop + ``asyncio.Protocol``: measured on this 2-core machine against nginx on
loopback (closed loop, 50-100 connections, one process, ``Connection: close``):
``loop.create_connection`` + Protocol reached 27,600 new connections/s with 0.86 s of user
CPU per 3 s; a bare ``epoll`` loop — edge-triggered, one Python object per connection, no
Future/Task/Transport — reached 31,700/s with 0.53 s of user CPU.  This engine is that
loop plus the schedule and the measurements; one worker saturated reaches 34-37k/s
(``bench/ceiling.py`` for the whole picture).  What remains is kernel time: ~20 µs of
system CPU per connection (connect() alone runs the server's side of the handshake in
softirq on loopback) against ~4 µs of Python.  In syscalls the path is leaner than wrk's:
socket, connect, send (a connect that is already complete, as on loopback; else EAGAIN and
EPOLLOUT first), epoll_ctl(ADD) once (IN|RDHUP|ET, no MOD), one recv (EPOLLRDHUP tells the
FIN came with the data), close: one event per connection.
Timing: every timestamp is seconds since the run's common start (``start_at``, a
``time.monotonic()`` value shared by all workers).  A connection's latencies are recorded
from its *scheduled* time as well as from its actual start (stats.py).

What one connection does (open, serve its events, close, record, time out) is in
conn.py, whose handlers :class:`Engine` inherits; errors are named there, at ONE place,
:func:`error_name` (docs/schema.md §7).  The plain path of each connection runs in C
(_pump.c, which owns the epoll set's connections and returns the rest of the events),
for the ~3 µs of user CPU per connection that Python cannot shed and the server on the
same cores needs (docs/run.md "The C hot path"); whatever is not
plainly fine is handed to conn.py.  The schedule, the intervals and the stats stay here.
"""

from __future__ import annotations

import gc
import math
import mmap
import os
import select
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from tcpchurn.load.config import LoadConfig
from tcpchurn.load.conn import DONE, EPOLLIN, Conn, Connections
from tcpchurn.load.conn import error_name as error_name  # re-exported (tests, callers)
from tcpchurn.load.emitter import Emitter
from tcpchurn.load.http import build_request
from tcpchurn.load.process import raise_nofile as raise_nofile  # re-exported (runner.py)
from tcpchurn.load.process import reserve_fds, tuned_for_load
from tcpchurn.load.pump import (
    board_bytes,
    close_mode,
    coalesce,
    engine_kind,
    lane_ring,
    steal_lag_s,
)
from tcpchurn.load.schedule import INF, Schedule
from tcpchurn.load.stats import LATE_S as LATE_S  # re-exported: the lag that makes "late"
from tcpchurn.load.stats import IntervalStats, Recorder, counts_and_layout
from tcpchurn.load.timerfd import Timer

if TYPE_CHECKING:
    from tcpchurn.load._pump import Pump

BATCH = 32  # connections started per loop turn before I/O is served again
#: events served per poll before the due connections are started again (edge-triggered:
#: the rest stay on the ready list for the next poll).  Unbounded (1023), one poll could
#: serve ~5 ms of completions while due connections wait: at 53k/s with 2 workers, lag
#: p99 4-12 ms.  At least 2 x BATCH, or a saturated loop starts connections faster than it
#: serves their events (up to two each: OUT, then IN) and in-flight runs away: 64 and 64
#: collapsed to 27k/s at a 75k/s target (measured).
MAX_EVENTS = 4 * BATCH
#: below this wait, poll(0) again instead of sleeping: a sleep and wake-up costs ~27 µs of
#: CPU and wakes ~35 µs late on this 2-core VM (measured), so spinning is no dearer
SPIN_S = 0.00003
#: wake-ups for due connections fall on this grid (seconds from the start), so at most one
#: per step: each costs a timerfd_settime and a context switch, ~27 µs of CPU that a
#: VM's timer reprogramming makes dearer (perf at 35k/s: 11% of all CPU in
#: timerfd_settime and finish_task_switch).  Adds 0-WAKE_GRID_S of lag, within the 1 ms
#: that makes a connection late.
WAKE_GRID_S = 0.00025
FOLD_IDLE_S = 0.0002  # fold pending stats when the next thing to do is this far away
FOLD_MIN = 5 * 256  # ... and at least this many floats (256 connections) are pending
#: fold regardless beyond 1024 connections: 0.17 ms of numpy, so the stall it puts on the
#: schedule stays well under the 2 ms lag bar (4096 took 0.33 ms, and what was left for
#: the interval's end 2.7 ms: bench/ceiling.py at 80% then had lag p99 2-10 ms)
FOLD_MAX = 5 * 1024
#: due times pushed into the worker's lane (_pump.c) at once: ~25 ms of a worker's share at
#: 20k/s, so the Python turn that computes them (~0.2 us a time) is rare and short; the
#: lane holds eight such (LANE_RING), so a stalled worker leaves ~120-140 ms for others
#: to take (the guest's own kdamond.0 was seen holding a vCPU for 43 ms at a run's start)
REFILL = 512
#: another worker's due connection this overdue is started by whichever worker is awake
#: (_pump.c's lanes): a worker's own lag is 0-0.25 ms of grid plus ~0.05 ms of wake-up,
#: so this takes only from a worker that is stalled or preempted, not from one on time.
#: ``TCPCHURN_STEAL_LAG_S`` overrides it for A/B measurements (pump.steal_lag_s; bench/).
STEAL_LAG_S = 0.0005
#: the C path's coalesced wake-ups: when the next start is at most a grid step away, a
#: worker sleeps on its timer alone and serves the connections that completed meanwhile
#: in one batch (_pump.c, run()), their times taken from the kernel's receive stamps.  At
#: 80% of the ceiling the vCPUs were 92-94% busy instead of 97-98%, at 50% 68% instead
#: of 86% (docs/run.md "Keeping the schedule").  ``TCPCHURN_COALESCE=0`` turns it off.
COALESCE = True
#: descriptors a worker holds besides its connections (epoll, timerfd, pipes, the lanes'
#: memfd, the interpreter's own), for reserve_fds
FD_HEADROOM = 256
END_GRACE_S = 0.05  # after ``duration``, connections still due may start this late
STOP_GRACE_S = 1.0  # after stop(): how long in-flight connections may still finish

def on_grid(t: float) -> float:
    """``t`` rounded up to the wake-up grid (:data:`WAKE_GRID_S`); INF stays INF.

    One wake-up then starts every connection due in a step, and an I/O wake-up in
    between finds the timer already armed at the same instant (no timerfd_settime).
    """
    if t == INF:
        return t
    # the tolerance keeps a time already on the grid there despite float division
    return math.ceil(t / WAKE_GRID_S - 1e-6) * WAKE_GRID_S


class _Span:
    """Where a run is: interval ``k`` began at ``t0``; scheduling ends at ``end_t`` (the
    duration, or the moment of a stop); after a stop, what is still open at
    ``drain_until`` is abandoned.

    Both loops: at ``--max-inflight`` open connections, what is due waits for one to end
    and starts late (its latencies count from its schedule, as wrk2's do when all its
    connections are busy); a due connection later than ``max(timeout, 1 s)`` is skipped,
    not started: starting it would measure our own backlog.  Why wait rather than skip
    at once: near a server's capacity, a stall of the VM (10-30 ms seen) leaves a
    backlog; pushed into the server all at once it overflowed nginx's accept queues
    (4,096 each), whose dropped SYNs come back a second later (TCP_TIMEOUT_INIT) and
    turned a stall into a collapse.  Held on our side it drains (bench/ceiling.py picks
    the cap, as it picks wrk's ``-c``)."""

    __slots__ = ("drain_until", "end_t", "k", "t0")

    def __init__(self, end_t: float) -> None:
        self.k = 0
        self.t0 = 0.0
        self.end_t = end_t
        self.drain_until = INF


class Engine(Connections):
    """Runs worker ``index`` of ``count``: its share of ``cfg``'s schedule.

    ``emit`` receives one :class:`IntervalStats` per interval (the last one partial).
    ``stop()`` may be called from a signal handler; ``control_fd`` (optional) is watched
    too: any byte means stop, EOF means the parent died (stop at once, no grace).
    ``recycle``: ``emit`` is done with the stats when it returns (a worker encodes them
    onto its pipe), so their histograms are reused for a later interval.
    ``background``: ``emit`` (and the recycling) run in a thread (emitter.py), not in the
    load loop; :meth:`run` returns once everything is emitted.
    ``board``: on the C path, the lanes of the schedule that all ``count`` workers share
    (:func:`new_board`), so that one starts what another, stalled, is late with; without
    it the engine keeps its share to itself.
    """

    def __init__(
        self,
        cfg: LoadConfig,
        emit: Callable[[IntervalStats], None],
        index: int = 0,
        count: int = 1,
        start_at: float | None = None,
        control_fd: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        recycle: bool = False,
        background: bool = False,
        board: mmap.mmap | None = None,
    ) -> None:
        self.cfg = cfg
        #: the lanes of all ``count`` workers, shared (workers.py); None: a private one
        self.board = board
        self.emit = emit
        self.recycle = recycle
        self.background = background
        self._emitter: Emitter | None = None
        self._held: list[IntervalStats] = []  # for the emitter, once the loop waits
        self.index = index
        self.count = count
        self.clock = clock
        self.start_at = clock() if start_at is None else start_at
        self.control_fd = control_fd
        self.sched = Schedule(cfg.rate, cfg.duration, cfg.ramp, cfg.arrival, cfg.seed,
                              index, count)
        share, extra = divmod(cfg.max_inflight, count)
        self.max_inflight = share + (1 if index < extra else 0)
        self.rec = Recorder()
        self.conns: dict[int, Conn] = {}
        self.stopping = False
        self.orphaned = False
        target = cfg.target
        self.addr = target.sockaddr
        self.af = target.af
        self.sources = cfg.source_ips
        self.http = cfg.mode == "http"
        self.close_server = cfg.close == "server"
        self.close_reset = cfg.close == "reset"
        self.request = build_request(target, keep_alive=cfg.close != "server")
        #: "c": connections run through the C hot path (_pump.c, made in run()); "python":
        #: all of them through conn.py (pump.py says when)
        self.kind = engine_kind(cfg, clock)
        self.pump: Pump | None = None
        # the last response found complete, by whether the server had closed (an
        # until-EOF body is complete only then)
        self._last_ok: dict[bool, bytes] = {False: b"\0", True: b"\0"}

    def warm_up(self) -> None:
        """Run the once-per-interval paths now, before the run's clock starts.

        The first fold and encode import and fault in numpy's and zlib's code, and the
        histograms' pages are touched on first use: measured as 30-90 ms of lag at the
        start of a run at 45k/s, none of it the target's doing.  And the descriptor
        table is grown for every connection allowed (``reserve_fds``): grown in the run,
        each doubling waited for an RCU grace period, 11-32 ms of lag at the start.
        """
        scratch = Recorder()
        scratch.done.extend((0.0, 0.0001, 0.0002, 0.0003, 0.0004) * 64)
        scratch.flush(0, 0.0, 1.0, 64.0, 0).encode()
        self.rec.prefault()
        # room for every connection this engine may hold, and the process's own
        # descriptors beside them, before run() starts the emitter thread (process.py);
        # under the limit run() will have (tuned_for_load), not a lower inherited one
        raise_nofile()
        reserve_fds(self.max_inflight + FD_HEADROOM)

    def stop(self) -> None:
        """Stop scheduling; in-flight connections get a short grace, then the last flush."""
        self.stopping = True

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Run the whole share (blocking); emits every interval, the last one partial.

        Intervals are ``[k i, (k+1) i)`` seconds from the start; the last one ends when
        scheduling ends (``duration``, or the moment of ``stop()``) and is emitted once the
        connections still in flight have finished (each within ``timeout``; after a stop,
        within a short grace, then abandoned: they stay counted as ``inflight``).
        """
        ep = select.epoll()
        timer = Timer()
        ep.register(timer.fd, EPOLLIN)
        if self.control_fd is not None:
            ep.register(self.control_fd, EPOLLIN)
        if self.kind == "c":
            from tcpchurn.load._pump import Pump

            self.pump = Pump(ep.fileno(), self.af, self.cfg.target.sockaddr,
                             [(ip, 0) for ip in self.sources], self.request,
                             close_mode(self.cfg.close), self.start_at, LATE_S, MAX_EVENTS,
                             http=self.http)
            board = self.board if self.board is not None else new_board(self.count)
            self.pump.share(board, self.index, self.count)
            self._bind()
        if self.background:
            self._emitter = Emitter(self.emit, self._emitted)
        try:
            with tuned_for_load():  # RLIMIT_NOFILE, timer slack, no GC pauses
                if self.pump is not None:
                    self._loop_c(ep, timer, self.pump)
                else:
                    self._loop(ep, timer)
        finally:
            self._abandon()
            timer.close()
            ep.close()
            if self._emitter is not None:
                self._hand_over()
                emitter, self._emitter = self._emitter, None
                emitter.close()

    def _wait_start(self, ep: select.epoll, timer: Timer) -> None:
        while self.clock() < self.start_at and not self.stopping:
            timer.arm(self.start_at)  # every worker starts at the same instant
            self._poll(ep, timer, self.start_at - self.clock())

    def _tick(self, run: _Span, now: float) -> float:
        """Take a stop into account and close the intervals over by ``now``; return the
        current interval's end.

        Intervals are wall-clock: a connection counts in the interval where it really
        started (achieved_rate), so the loops close intervals before starting more.
        """
        if self.stopping and run.drain_until == INF:
            run.end_t = min(max(now, run.t0), run.end_t)
            run.drain_until = now if self.orphaned else now + min(STOP_GRACE_S,
                                                                  self.cfg.timeout)
            self.sched.next_time = INF
        interval = self.cfg.interval
        t1 = (run.k + 1) * interval
        while t1 <= now and t1 < run.end_t:
            self._emit(run.k, run.t0, t1)
            run.k += 1
            run.t0 = t1
            t1 = (run.k + 1) * interval
        return t1

    def _loop(self, ep: select.epoll, timer: Timer) -> None:
        sched = self.sched
        clock = self.clock
        start_at = self.start_at
        timeout = self.cfg.timeout
        conns = self.conns
        rec = self.rec
        start = self._start
        advance = sched.advance
        max_inflight = self.max_inflight
        skip_lag = max(timeout, 1.0)  # see _Span
        run = _Span(self.cfg.duration)
        tick = self._tick
        self._wait_start(ep, timer)
        while True:
            now = clock() - start_at
            t1 = tick(run, now)
            end_t = run.end_t
            drain_until = run.drain_until
            nxt = sched.next_time
            if now >= end_t + END_GRACE_S and nxt != INF:
                # the run's time is over: what a saturated generator could not start by
                # now is skipped (counted), not started late after the end
                nxt = self._skip_rest()
            started = 0
            inflight = len(conns)
            full = False  # at --max-inflight: what is due waits for a connection to end
            while nxt <= now and started < BATCH:
                if now - nxt > skip_lag:
                    rec.skipped += 1
                elif inflight >= max_inflight:
                    full = True
                    break
                else:
                    start(sched.next_seq, nxt, now, ep)
                    inflight = len(conns)
                started += 1
                nxt = advance()
            if inflight:
                self._expire(now)
                full = full and len(conns) >= max_inflight  # an expiry may free a slot
            if len(rec.done) >= FOLD_MAX:
                rec.fold()  # never idle (saturated): bound the stall and the memory
            if nxt == INF and (not conns or now >= drain_until):
                self._abandon()
                self._emit(run.k, run.t0, end_t)
                return
            if not full and (started >= BATCH or nxt <= now):  # more due: serve, come back
                wait = 0.0
            else:
                wake = min(INF if full else nxt, t1 if t1 < end_t else INF, drain_until)
                if conns:  # the oldest first (dict order)
                    wake = min(wake, next(iter(conns.values())).start + timeout)
                wake = on_grid(wake)
                wait = wake - now
                if wait > FOLD_IDLE_S and len(rec.done) >= FOLD_MIN:
                    rec.fold()  # idle: histogram work now, not at the interval's end
                    continue
                if wait <= SPIN_S:
                    wait = 0.0
                elif wait != INF:
                    timer.arm(start_at + wake)
            self._poll(ep, timer, wait)

    def _loop_c(self, ep: select.epoll, timer: Timer, pump: Pump) -> None:
        """:meth:`_loop` with the per-connection work in C: ``Pump.run`` starts what is
        due, serves the events, times connections out and sleeps between, on the same
        grid and rules, until something needs Python.  Here: the intervals, the stop and
        the end, the next due times (:data:`REFILL` at a time), folding the stats, and
        what the C path hands over (conn.py)."""
        sched = self.sched
        clock = self.clock
        start_at = self.start_at
        timeout = self.cfg.timeout
        conns = self.conns
        rec = self.rec
        pump.pace(timeout, max(timeout, 1.0), self.max_inflight, BATCH, WAKE_GRID_S, SPIN_S,
                  timer.fd, steal_lag_s(STEAL_LAG_S), coalesce(COALESCE))
        room = lane_ring() - REFILL  # push when the lane holds no more than this
        run = _Span(self.cfg.duration)
        # the lane full before the start: a worker whose vCPU is taken away at the start
        # (new processes on both sides) leaves its first connections for others to start
        self._push(pump, room)
        self._wait_start(ep, timer)
        while True:
            now = clock() - start_at
            t1 = self._tick(run, now)
            end_t = run.end_t
            drain_until = run.drain_until
            if self.stopping:
                pump.drop()  # nothing more starts (not skipped: stopped)
            left = pump.backlog > 0 or sched.next_time != INF
            if left and now >= end_t + END_GRACE_S:
                rec.skipped += pump.drop()  # as in _loop: not started late after the end
                left = self._skip_rest() != INF
            if not left and (not self._inflight() or now >= drain_until):
                self._abandon()
                self._emit(run.k, run.t0, end_t)
                return
            self._push(pump, room)
            if conns:
                self._expire(now)
            deadline = t1 if t1 < end_t else end_t + END_GRACE_S if left else INF
            deadline = min(deadline, drain_until)
            if conns:
                deadline = min(deadline, min(c.start for c in conns.values()) + timeout)
            if self._held:
                self._hand_over()
            skipped, now, others, exports, failed = pump.run(
                sched.next_time, deadline, len(conns))
            timer.armed_at = -1.0  # run() arms the timer and consumes its expiries itself
            rec.skipped += skipped
            if failed is not None:
                self._fail_early(*failed)
            for x in exports:
                self._adopt(x, now)
            self._dispatch(others, now, timer)
            # rec.done holds only what conn.py finished (the C path writes its own
            # latencies into the bound histograms): few rows, folded when idle
            pending = len(rec.done)
            if pending >= FOLD_MIN:
                nxt = min(pump.next_due, sched.next_time)  # next_due: inf when empty
                if pending >= FOLD_MAX or nxt - now > FOLD_IDLE_S:
                    rec.fold()  # idle (or never): histogram work now, not at the end

    def _push(self, pump: Pump, room: int) -> None:
        """Top the lane up with the schedule's next due times, :data:`REFILL` at a time,
        while it holds no more than ``room``."""
        sched = self.sched
        while sched.next_time != INF and pump.backlog <= room:
            times = array("d")
            nxt = sched.next_time
            while nxt != INF and len(times) < REFILL:
                times.append(nxt)
                nxt = sched.advance()
            pump.push(times)

    def _skip_rest(self) -> float:
        sched = self.sched
        n = 0
        while sched.next_time != INF:
            sched.advance()
            n += 1
        self.rec.skipped += n
        return INF

    def _inflight(self) -> int:
        return len(self.conns) + (self.pump.live if self.pump is not None else 0)

    def _poll(self, ep: select.epoll, timer: Timer, wait: float) -> None:
        # the timer fd, armed for any finite wait, does the wake-up: a poll timeout too
        # would start and cancel a second hrtimer per sleep
        timeout = 0.0 if wait <= 0 else -1.0
        if self._held:
            self._hand_over()
        pump = self.pump
        if pump is not None:
            # before the start only: nothing of the C path's is open yet
            now, events, exports = pump.poll(timeout, MAX_EVENTS, INF)
            for x in exports:
                self._adopt(x, now)
        else:
            events = ep.poll(timeout, MAX_EVENTS)
            now = self.clock() - self.start_at
        self._dispatch(events, now, timer)

    def _dispatch(self, events: list[tuple[int, int]], now: float, timer: Timer) -> None:
        get = self.conns.get
        event = self._event
        for fd, ev in events:
            c = get(fd)
            if c is not None:
                event(c, ev, now)
            elif fd == timer.fd:
                timer.clear()
            elif fd == self.control_fd:
                self._control()

    def _bind(self) -> None:
        """Have the C path record latencies straight into this interval's histograms."""
        assert self.pump is not None
        self.pump.bind(*counts_and_layout(self.rec.hists))

    def _take(self) -> None:
        """Move what the C path counted into the recorder."""
        assert self.pump is not None
        rows, ok, attempted, late, taken_over, added = self.pump.take()
        rec = self.rec
        rec.done.frombytes(rows)  # none while histograms are bound
        rec.counted(added)
        rec.ok += ok
        rec.attempted += attempted
        rec.late += late
        rec.taken_over += taken_over

    def _control(self) -> None:
        assert self.control_fd is not None
        try:
            data = os.read(self.control_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.orphaned = True  # the parent is gone: nobody will read our stats
        self.stopping = True

    def _abandon(self) -> None:
        """Close what is still open (stop or exit) without counting it as failed."""
        if self.pump is not None:
            self.pump.abandon()
        for c in list(self.conns.values()):
            c.state = DONE
            c.sock.close()
        self.conns.clear()

    def _emit(self, k: int, t0: float, t1: float) -> None:
        target = self.sched.expected(t0, t1)
        if self.pump is not None:
            self._take()
        st = self.rec.flush(k, t0, t1 - t0, target, self._inflight())
        if self.pump is not None:
            self._bind()  # the next interval's histograms
        if self._emitter is not None:
            self._held.append(st)  # _hand_over()
        else:
            self.emit(st)
            self._emitted(st)

    def _hand_over(self) -> None:
        """Give the emitter the intervals that ended, now that the loop is about to wait.

        Not at the interval's end: woken then, the emitter takes the GIL in turns with
        the rest of the loop's end-of-interval work (every switch interval), while the
        connections due meanwhile wait.  Handed over just before the loop waits, it runs
        while the loop sleeps, as emitter.py intends.  At 56,500/s (80% of the ceiling)
        against nginx, 4 pairs in alternation: the loop was out of Pump.run for a median
        of 0.41-0.70 ms at the intervals' ends, against 0.46-1.72 ms when handed over at
        once, and 478-1,130 connections were late against 1,261-14,594."""
        assert self._emitter is not None
        for st in self._held:
            self._emitter.put(st)
        self._held.clear()

    def _emitted(self, st: IntervalStats) -> None:
        """After ``emit(st)``: its histograms back for a later interval, and a GC pass."""
        if self.recycle:
            self.rec.recycle(st.hists)
        gc.collect(1)  # young generations only: ~0.1 ms (the collector is off in run())


def new_board(count: int, fd: int = -1) -> mmap.mmap:
    """The lanes of ``count`` workers: anonymous memory, or the memfd ``fd`` (workers.py
    creates one and maps it in each worker).  Zero-filled: every lane empty."""
    size = board_bytes(count)
    if fd >= 0:
        return mmap.mmap(fd, size)
    return mmap.mmap(-1, size)


def run_local(cfg: LoadConfig) -> list[IntervalStats]:
    """Run ``cfg`` in this process with one engine (tests, small loads); all intervals."""
    out: list[IntervalStats] = []
    Engine(cfg.replace(workers=1), out.append).run()
    return out
