"""The worker pool: processes that share one start, merge per interval, stop early when
asked, and never outlive their parent."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from tcpchurn.load.config import LoadConfig, Target, parse_target
from tcpchurn.load.stats import RunTotals
from tcpchurn.load.workers import WorkerPool, worker_cpus
from tcpchurn.server import ServerConfig, spawn
from tests.load.nginx_helper import free_port


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with spawn(ServerConfig(close="server", port=free_port())) as srv:
        yield srv.port


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_two_workers_merge_every_interval_exactly(port: int) -> None:
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=999.0, duration=2.0,
                     workers=2, interval=0.5).validate()
    totals = RunTotals()
    with WorkerPool(cfg) as pool:
        pool.start()
        seen = list(pool.intervals())
        pids = [p.pid for p in pool._procs]
    assert [st.index for st in seen] == [0, 1, 2, 3]
    assert [st.t0 for st in seen] == [0.0, 0.5, 1.0, 1.5]
    # 999/s: connection n is due at n/999 s, so the half-seconds hold 500, 499, 500, 499
    assert [st.target for st in seen] == [500.0, 499.0, 500.0, 499.0]
    for st, nxt in zip(seen, [*seen[1:], None], strict=True):
        # a connection counts where it really started: only one started late (after its
        # interval ended) can move to the next interval
        assert abs(st.attempted - st.target) <= (nxt.late if nxt else 0) + st.late
        assert st.failed == 0
        totals.add(st)
    assert totals.attempted == totals.ok == 1998
    assert totals.to_json()["achieved_rate"] == 999.0
    assert not any(alive(pid) for pid in pids)
    # workers reuse their histograms from interval to interval (Recorder.recycle): each
    # interval's counts are the connections that ended in it, none left over from the one
    # before (a connection is recorded when it ends: one started just before the end of
    # an interval may end in the next)
    for st in seen:
        assert st.hists["total"].get_total_count() == st.ok
        assert st.hists["schedule_lag"].get_total_count() == st.ok + st.failed
    # each asked the scheduler for a short slice (None on kernels before 6.12)
    assert len(pool.slices_ns) == 2 and len(set(pool.slices_ns)) == 1


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(ln.split()[1] for ln in f if ln.startswith(name + ":"))


def allowed_cpus(pid: int) -> str:
    return status_field(pid, "Cpus_allowed_list")


def test_each_worker_s_descriptor_table_holds_its_share_before_the_start(port: int) -> None:
    # grown during the run, each doubling of a shared table waits for an RCU grace
    # period (process.reserve_fds): both workers slept 8-18 ms twice at every start
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=100.0, duration=0.3,
                     workers=2, max_inflight=6000).validate()
    with WorkerPool(cfg) as pool:
        pool.start()  # returns once every worker is ready, before any connection
        sizes = [int(status_field(p.pid, "FDSize")) for p in pool._procs]
        for _st in pool.intervals():
            pass
    # 3,000 connections each, 256 descriptors beside them: the kernel rounds up to 4,096
    assert all(size >= 3000 + 256 for size in sizes), sizes


def test_the_table_is_grown_under_the_raised_limit_not_an_inherited_low_one(
        port: int) -> None:
    # a library user's process with the usual soft limit of 1,024: the worker raises it
    # to the hard one (as run() does anyway) before it grows its table
    code = textwrap.dedent(f"""
        import resource
        from tcpchurn.load.config import LoadConfig, parse_target
        from tcpchurn.load.workers import WorkerPool
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        cfg = LoadConfig(target=parse_target("127.0.0.1:{port}"), rate=100.0,
                         duration=0.3, workers=1, max_inflight=3000).validate()
        with WorkerPool(cfg) as pool:
            pool.start()
            with open(f"/proc/{{pool._procs[0].pid}}/status") as f:
                print(next(ln.split()[1] for ln in f if ln.startswith("FDSize:")))
            for _st in pool.intervals():
                pass
    """)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 3000 + 256:
        pytest.skip("the hard RLIMIT_NOFILE is below what the test asks")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert int(out) >= 3000 + 256


@pytest.mark.parametrize("pin", [True, False])
def test_workers_run_on_a_cpu_each_unless_told_not_to(port: int, pin: bool) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=100.0, duration=0.3,
                     workers=2, pin=pin).validate()
    mine = allowed_cpus(os.getpid())
    with WorkerPool(cfg) as pool:
        pool.start()
        seen = [allowed_cpus(p.pid) for p in pool._procs]
        totals = RunTotals()
        for st in pool.intervals():
            totals.add(st)
    assert totals.ok == 30
    if pin:
        cpus = sorted(os.sched_getaffinity(0))
        assert pool.cpus == [cpus[0], cpus[len(cpus) // 2]]
        assert seen == [str(c) for c in pool.cpus]
    else:
        assert pool.cpus is None
        assert seen == [mine, mine]


def test_worker_cpus_spreads_workers_and_leaves_one_or_too_many_free() -> None:
    assert worker_cpus(2, {0, 1}) == [0, 1]
    assert worker_cpus(4, set(range(8))) == [0, 2, 4, 6]
    assert worker_cpus(2, {3, 5, 7}) == [3, 5]
    assert worker_cpus(1, {0, 1}) is None  # one worker: nothing to cover for
    assert worker_cpus(3, {0, 1}) is None  # more than CPUs: the scheduler spreads them


STALL_S = 0.3


@pytest.fixture(scope="module")
def patient_port() -> Iterator[int]:
    """A built-in server that waits 2 s for a request (its default closes a connection
    silent for 200 ms: one the stopped worker had connected but not yet written to then
    ended CLOSED_EARLY, 1 run in ~20 beside two busy loops)."""
    with spawn(ServerConfig(close="server", port=free_port(), idle_close_ms=2000.0)) as srv:
        yield srv.port


@pytest.mark.parametrize(("stalled", "at"), [(0, 0.5), (1, 0.5), (1, -0.01)])
def test_a_stalled_worker_s_connections_are_started_on_time_by_the_other(
        patient_port: int, stalled: int, at: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM's host stalls one vCPU at a time (docs/run.md "Keeping the schedule"); here a
    worker is stopped outright (SIGSTOP) for 0.3 s, mid-run or from just before the
    start (its lane is filled before it).  Its share of those 0.3 s (300 connections at
    2,000/s on two workers) is started by the other worker, each once, on time: without
    the lanes all 300 would start 0-300 ms late, ~7% of the run."""
    monkeypatch.setenv("TCPCHURN_ENGINE", "c")  # the lanes are the C path's
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{patient_port}"), rate=2000.0,
                     duration=2.0, workers=2, interval=0.5).validate()
    totals = RunTotals()
    with WorkerPool(cfg) as pool:
        pool.start()
        assert pool.start_at is not None
        pid = pool._procs[stalled].pid

        def stall() -> None:
            time.sleep(max(0.0, pool.start_at + at - time.monotonic()))  # type: ignore[operator]
            os.kill(pid, signal.SIGSTOP)
            time.sleep(STALL_S)
            os.kill(pid, signal.SIGCONT)

        staller = threading.Thread(target=stall)
        staller.start()
        for st in pool.intervals():
            totals.add(st)
        staller.join()
    # every due connection started once: none lost, none started twice
    assert totals.attempted == totals.ok == 4000, totals.errors
    assert totals.skipped == 0
    # the stalled worker's 300 (less the few due in its last batch before the stop); a
    # few more when the CPUs are busy enough to hold up either worker 0.5 ms (401 seen
    # beside two busy loops), so no upper bound
    assert totals.taken_over >= 250, totals.taken_over
    lag = totals.to_json()["latency_ms"]["schedule_lag"]
    assert lag["p99"] < 20.0, lag  # without the lanes: ~260 ms


def test_on_ready_runs_with_every_worker_ready_and_before_the_start(port: int) -> None:
    """The runner's baseline samples go in ``on_ready``: after start-up (so the first
    interval's deltas do not count it), before the load (so they are not in its way)."""
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=100.0, duration=0.5,
                     workers=2).validate()
    seen: list[tuple[float, float | None, int]] = []
    with WorkerPool(cfg) as pool:
        pool.start(on_ready=lambda: seen.append(
            (time.monotonic(), pool.start_at, len(pool.slices_ns))))
        totals = RunTotals()
        for st in pool.intervals():
            totals.add(st)
    [(when, start_at, ready)] = seen
    assert start_at is None and ready == 2  # both reported ready; no start time yet
    assert pool.start_at is not None and pool.start_at > when
    assert totals.ok == 50


def test_stop_ends_early_with_a_partial_last_interval(port: int) -> None:
    cfg = LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=500.0, duration=30.0,
                     workers=2, interval=0.5).validate()
    with WorkerPool(cfg) as pool:
        pool.start()
        seen = []
        for st in pool.intervals():
            seen.append(st)
            if st.index == 1:
                pool.stop()
        pids = [p.pid for p in pool._procs]
    assert len(seen) in (2, 3)  # stop may land before or after the 1.0 s boundary
    assert sum(st.attempted for st in seen) < 2000
    assert sum(st.ok for st in seen) + sum(st.inflight for st in seen[-1:]) >= sum(
        st.attempted for st in seen) - 1
    assert all(st.failed == 0 for st in seen)
    assert not any(alive(pid) for pid in pids)


def test_workers_die_with_their_parent(port: int) -> None:
    """The parent is SIGKILLed mid-run: no orphan may keep loading the target."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from tcpchurn.load.config import LoadConfig, Target, parse_target
        from tcpchurn.load.workers import WorkerPool, worker_cpus
        cfg = LoadConfig(target=parse_target("127.0.0.1:{port}"), rate=100.0,
                         duration=60.0, workers=2)
        pool = WorkerPool(cfg)
        pool.start()
        print(" ".join(str(p.pid) for p in pool._procs), flush=True)
        next(iter(pool.intervals()))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = [pid for pid in pids if alive(pid)]
    for pid in leftover:  # never leave a process behind, even when the test fails
        os.kill(pid, 9)
    assert leftover == []


def test_a_failing_worker_is_reported() -> None:
    from tcpchurn.load.workers import WorkerError

    # an impossible target that validation would never let through: an IPv4 literal
    # marked IPv6 makes connect() raise inside the worker (a bug, not a counted error)
    bad = LoadConfig(target=Target(host="127.0.0.1", port=9, family=6), rate=10.0,
                     duration=1.0, workers=1, interval=0.5)
    with WorkerPool(bad) as pool:
        pool.start()
        with pytest.raises(WorkerError):
            list(pool.intervals())
