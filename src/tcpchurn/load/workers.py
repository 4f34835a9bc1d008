"""One engine per process, each with its interleaved share of the schedule, merged per interval.

Why processes: one Python process tops out at ~30,000 new connections/s (engine.py);
the rate must scale with cores.  Why a fresh interpreter (``python -c``, not ``fork``):
the parent may already run threads (the namespace reader of ``Procfs``, the Prometheus
exporter) and ``fork`` with threads is unsafe; and not ``multiprocessing``'s spawn either,
which re-imports the caller's ``__main__`` (a library user's script without the
``if __name__ == "__main__"`` guard would start itself again).  A start costs ~0.2 s.

Protocol (pipes; the one shared memory is the schedule's lanes, below):

* child -> parent, one message per ``send_bytes``: ``R`` ready (+ the scheduler slice
  granted, in ns, empty if none: :mod:`tcpchurn.load.slice`); ``I`` + ``IntervalStats.
  encode()``; ``X`` + a traceback (the worker failed); ``D`` done.
* parent -> child: the pickled ``(cfg, index, count, board_fd, cpu)``, then ``S<start_at>``
  once (the common ``time.monotonic()`` start: the clock is system-wide), later any bytes
  mean *stop*; EOF means the parent is gone.

The lanes (engine.py, _pump.c): one memfd that every worker maps, in which each worker
publishes its next due times and any worker starts another's that are overdue: a VM's
host stalls one vCPU at a time, and the worker on it would otherwise start all its
connections of the stall late.  ``board_fd`` is -1 where the C path was not built.

Workers die with the parent: ``PR_SET_PDEATHSIG`` (prctl(2)) kills them if the parent
dies without a word, and EOF on the control pipe stops them if it exits in an orderly
way but forgot to stop them.  They run in their own process group (and ignore SIGINT
besides): Ctrl-C reaches the parent alone, and it is the parent that decides to stop
(and still collects the last interval).
"""

from __future__ import annotations

import multiprocessing.connection
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from tcpchurn.libc import libc
from tcpchurn.load.config import LoadConfig
from tcpchurn.load.process import one_blas_thread
from tcpchurn.load.slice import request_slice
from tcpchurn.load.stats import IntervalStats

PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h
READY_TIMEOUT_S = 60.0
START_MARGIN_S = 0.05  # from "all ready" to the common start


class WorkerError(RuntimeError):
    """A worker process failed (a bug, not a limit): carries the worker's traceback."""


def _die_with_parent() -> None:
    libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(out_fd: int, ctrl_fd: int) -> None:
    """Body of one worker process (``python -c``; see the module docstring)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = Connection(out_fd, readable=False)
    ctrl = Connection(ctrl_fd, writable=False)
    try:
        from tcpchurn.load.engine import Engine, new_board

        cfg, index, count, board_fd, cpu = pickle.loads(ctrl.recv_bytes())
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # before the engine's memory is touched
        board = None
        if board_fd >= 0:
            board = new_board(count, board_fd)
            os.close(board_fd)

        def emit(st: IntervalStats) -> None:
            out.send_bytes(b"I" + st.encode())

        engine = Engine(cfg, emit, index=index, count=count, control_fd=ctrl.fileno(),
                        recycle=True, background=True, board=board)
        engine.warm_up()
        granted = request_slice()
        out.send_bytes(b"R" + (str(granted).encode() if granted else b""))
        msg = ctrl.recv_bytes()
        if not msg.startswith(b"S"):
            out.send_bytes(b"D")
            return
        engine.start_at = float(msg[1:])
        signal.signal(signal.SIGTERM, lambda *_: engine.stop())
        engine.run()
        out.send_bytes(b"D")
    except (EOFError, BrokenPipeError):
        return  # the parent is gone
    except BaseException:
        try:
            out.send_bytes(b"X" + traceback.format_exc().encode())
        except OSError:
            pass


def _child_env() -> dict[str, str]:
    """The parent's environment, with numpy's BLAS kept to one thread (the engine needs
    no BLAS at all: process.one_blas_thread)."""
    env = dict(os.environ)
    one_blas_thread(env)
    return env


def worker_cpus(count: int, allowed: set[int] | None = None) -> list[int] | None:
    """The CPU for each of ``count`` workers, spread over ``allowed`` (default: the CPUs
    this process may use), or None: one worker, or more workers than CPUs, run free.

    Why pin: with the load generator and the server on the same cores, the scheduler
    stacked both workers on one CPU and both nginx workers on the other (perf sched at
    55,000/s: a worker runnable for 4 ms behind the other's 3.8 ms run), and a stall of
    that one vCPU then hits both, with no worker elsewhere to take over their lanes.
    Measured in alternation at 55,000/s against nginx on 2 vCPUs: lag p99 0.50-0.69 ms
    pinned, 0.96-2.00 ms not; at 67,500/s 2.1-2.5 ms against 3.9-11.2; nginx's CPU per
    connection and the highest rate sustained the same (docs/run.md).

    >>> worker_cpus(2, {0, 1}), worker_cpus(2, {0, 1, 2, 3}), worker_cpus(3, {0, 1})
    ([0, 1], [0, 2], None)
    """
    cpus = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    if count < 2 or count > len(cpus):
        return None
    return [cpus[i * len(cpus) // count] for i in range(count)]


def _board_fd(count: int) -> int:
    """A memfd sized for ``count`` lanes (engine.new_board), or -1 without the C path."""
    from tcpchurn.load import pump

    if not pump.available() or count < 2:
        return -1
    fd = os.memfd_create("tcpchurn-lanes")
    os.ftruncate(fd, pump.board_bytes(count))
    return fd


_CHILD = "import sys; from tcpchurn.load.workers import _child; _child(*map(int, sys.argv[1:]))"


class WorkerPool:
    """``cfg.workers`` engine processes sharing one start time.

    >>> # pool = WorkerPool(cfg); pool.start()
    >>> # for st in pool.intervals(): print(st.to_json())   # merged over workers
    """

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.count = cfg.workers
        self.start_at: float | None = None
        #: the scheduler slice each worker was granted (ns; None: the kernel's default)
        self.slices_ns: list[int | None] = []
        #: the CPU each worker is pinned to (None: not pinned; worker_cpus)
        self.cpus = worker_cpus(self.count) if cfg.pin else None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._outs: list[Connection] = []
        self._ctrls: list[Connection] = []
        self._stopped = False

    def start(self, on_ready: Callable[[], None] | None = None) -> None:
        """Spawn the workers, wait until each is ready, give them the common start time.

        ``on_ready`` runs once every worker is ready and before the start time is set:
        the runner's baseline kernel samples, which walk the socket tables (tens of ms
        with a full TIME_WAIT table left by an earlier run) and would otherwise overlap
        the first milliseconds of the load and make them late.
        """
        board_fd = _board_fd(self.count)
        try:
            self._spawn(board_fd)
        finally:
            if board_fd >= 0:
                os.close(board_fd)  # the workers have their own descriptors (and maps)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for index, out in enumerate(self._outs):
            if not out.poll(max(0.0, deadline - time.monotonic())):
                raise WorkerError(f"worker {index} did not start within {READY_TIMEOUT_S} s")
            msg = self._recv(index)
            if msg is None or msg[:1] != b"R":
                raise WorkerError(f"worker {index} failed to start: {self._why(msg)}")
            self.slices_ns.append(int(msg[1:]) if msg[1:] else None)
        if on_ready is not None:
            on_ready()
        self.start_at = time.monotonic() + START_MARGIN_S
        for ctrl in self._ctrls:
            ctrl.send_bytes(b"S" + repr(self.start_at).encode())

    def _spawn(self, board_fd: int) -> None:
        fds = (board_fd,) if board_fd >= 0 else ()
        for index in range(self.count):
            out_r, out_w = os.pipe()
            ctrl_r, ctrl_w = os.pipe()
            os.set_inheritable(out_w, True)
            os.set_inheritable(ctrl_r, True)
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(out_w), str(ctrl_r)],
                    pass_fds=(out_w, ctrl_r, *fds),
                    stdin=subprocess.DEVNULL,
                    env=_child_env(),
                    # own process group: the terminal's Ctrl-C reaches the parent only,
                    # which stops the workers and still collects their last interval
                    start_new_session=True,
                )
            finally:
                # drop our copies of the child's ends: EOF then means what it says
                os.close(out_w)
                os.close(ctrl_r)
            self._procs.append(proc)
            self._outs.append(Connection(out_r, writable=False))
            ctrl = Connection(ctrl_w, readable=False)
            self._ctrls.append(ctrl)
            cpu = self.cpus[index] if self.cpus is not None else None
            ctrl.send_bytes(pickle.dumps((self.cfg, index, self.count, board_fd, cpu)))

    def _recv(self, index: int) -> bytes | None:
        try:
            return self._outs[index].recv_bytes()
        except (EOFError, OSError):
            return None

    @staticmethod
    def _why(msg: bytes | None) -> str:
        if msg is None:
            return "it exited"
        if msg[:1] == b"X":
            return msg[1:].decode(errors="replace").strip()
        return repr(msg[:40])

    def intervals(self) -> Iterator[IntervalStats]:
        """Yield interval ``k`` merged over all workers, in order, as soon as complete.

        A worker that has finished (or stopped early) no longer holds later intervals
        back.  Raises :class:`WorkerError` if a worker fails.
        """
        pending: dict[int, tuple[IntervalStats, set[int]]] = {}
        sent_max = dict.fromkeys(range(self.count), -1)  # worker -> highest index sent
        done_last: dict[int, int] = {}  # worker -> its last index, once it has finished
        waiting = {self._outs[i]: i for i in range(self.count)}
        k = 0
        while True:
            while k in pending:
                merged, seen = pending[k]
                expected = {i for i in range(self.count) if done_last.get(i, k) >= k}
                if not expected <= seen:
                    break
                del pending[k]
                yield merged
                k += 1
            if not waiting:
                for index in sorted(pending):  # cannot complete any more: in order
                    yield pending.pop(index)[0]
                return
            for out in multiprocessing.connection.wait(list(waiting)):
                assert isinstance(out, Connection)
                index = waiting[out]
                msg = self._recv(index)
                tag = msg[:1] if msg is not None else b""
                if tag == b"I":
                    assert msg is not None
                    st = IntervalStats.decode(msg[1:])
                    sent_max[index] = max(sent_max[index], st.index)
                    if st.index in pending:
                        pending[st.index][0].merge(st)
                        pending[st.index][1].add(index)
                    else:
                        pending[st.index] = (st, {index})
                    continue
                del waiting[out]
                done_last[index] = sent_max[index]
                if tag == b"D" or (self._stopped and msg is None):
                    continue
                raise WorkerError(f"worker {index} failed: {self._why(msg)}")

    def stop(self) -> None:
        """Graceful early stop: workers stop scheduling and flush their last interval.

        Safe to call from a signal handler and more than once.
        """
        self._stopped = True
        for ctrl in self._ctrls:
            try:
                ctrl.send_bytes(b"stop")
            except OSError:
                pass

    def close(self) -> None:
        """Stop and reap every worker (killing any that does not exit within 5 s)."""
        if not self._stopped:
            self.stop()
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(1.0)
        for conn in (*self._outs, *self._ctrls):
            conn.close()
        self._procs, self._outs, self._ctrls = [], [], []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
