"""runner.run() in this process with a scripted worker pool: the orchestration alone.

The pool is the one seam replaced (the real one is exercised end to end in
test_run_e2e.py); the kernel samples, the files and the diagnosis are the real ones.
This makes the rare paths deterministic: a failure half-way, a signal at a known interval.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tcpchurn.load import workers
from tcpchurn.load.config import LoadConfig, parse_target
from tcpchurn.load.stats import IntervalStats
from tcpchurn.runner import RunConfig, run


def _interval(k: int, attempted: int, errors: dict[str, int] | None = None) -> IntervalStats:
    st = IntervalStats(k, float(k), 1.0)
    st.target = 100.0
    st.attempted = attempted
    st.failed = sum((errors or {}).values())
    st.ok = attempted - st.failed
    st.errors = dict(errors or {})
    st.first_error_s = {name: k + 0.5 for name in st.errors}
    return st


class ScriptedPool:
    """Yields the scripted intervals; ``action(k)`` runs before interval ``k`` is yielded."""

    script: ClassVar[list[IntervalStats]] = []
    action: Callable[[int], None] = staticmethod(lambda k: None)
    instances: ClassVar[list[ScriptedPool]] = []

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.stopped = 0
        self.closed = False
        self.slices_ns: list[int | None] = [None]  # as a worker on a kernel before 6.12
        self.cpus: list[int] | None = None  # one worker: not pinned
        ScriptedPool.instances.append(self)

    def start(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready is not None:
            on_ready()  # the runner's baseline samples, as WorkerPool does

    def intervals(self) -> Iterator[IntervalStats]:
        for k, st in enumerate(self.script):
            if self.stopped:
                return
            type(self).action(k)
            yield st

    def stop(self) -> None:
        self.stopped += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedPool]:
    ScriptedPool.instances = []
    ScriptedPool.action = staticmethod(lambda k: None)
    monkeypatch.setattr(workers, "WorkerPool", ScriptedPool)
    return ScriptedPool


def _cfg(out: Path) -> RunConfig:
    load = LoadConfig(target=parse_target("http://127.0.0.1:9/"), rate=100.0, duration=3.0,
                      workers=1).validate()
    return RunConfig(load=load, out_dir=out, detail_every=2)


def _files(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((out / "summary.json").read_text())
    timeline = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    return summary, timeline


def test_three_intervals_three_lines(tmp_path: Path, pool: type[ScriptedPool]) -> None:
    pool.script = [_interval(0, 100), _interval(1, 100, {"ECONNREFUSED": 4}), _interval(2, 99)]
    seen: list[dict[str, Any]] = []
    started: list[dict[str, Any]] = []
    result = run(_cfg(tmp_path), on_interval=seen.append,
                 on_start=lambda env, srv: started.append(env))
    summary, timeline = _files(tmp_path)
    assert [line["t"] for line in timeline] == [1.0, 2.0, 3.0] == [line["t"] for line in seen]
    assert summary == result.summary
    assert summary["connections"] == {"attempted": 299, "ok": 295, "failed": 4, "late": 0,
                                      "skipped": 0, "taken_over": 0}
    assert summary["errors"] == {"ECONNREFUSED": 4}
    assert summary["first_error_s"] == {"ECONNREFUSED": 1.5}
    assert summary["environment"]["worker_slice_us"] == [None]  # what the pool reported
    assert summary["environment"]["worker_cpus"] is None
    assert summary["duration_s"] == 3.0 and summary["interrupted"] is False
    assert started and started[0] == summary["environment"]
    # detail_every=2: a full dump on interval 2, and always on the last one.
    assert [line["client"]["destinations"] is not None for line in timeline] == [
        False, True, True]
    assert all(line["server"] is None for line in timeline)
    assert result.exit_code == 1  # 4 connections failed
    assert pool.instances[0].closed


def test_failure_half_way_still_writes_both_files(
    tmp_path: Path, pool: type[ScriptedPool]
) -> None:
    pool.script = [_interval(0, 100), _interval(1, 100), _interval(2, 100)]

    def explode(k: int) -> None:
        if k == 1:
            raise RuntimeError("worker 0 failed: boom")

    pool.action = staticmethod(explode)
    with pytest.raises(RuntimeError, match="boom"):
        run(_cfg(tmp_path))
    summary, timeline = _files(tmp_path)
    assert len(timeline) == 1
    assert summary["interrupted"] is True
    assert summary["connections"]["attempted"] == 100
    assert summary["warnings"] == ["the run stopped early: worker 0 failed: boom"]
    assert pool.instances[0].stopped and pool.instances[0].closed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_pool_and_marks_the_run(
    tmp_path: Path, pool: type[ScriptedPool], signum: int
) -> None:
    pool.script = [_interval(k, 100) for k in range(3)]

    def signal_before_second(k: int) -> None:
        if k == 1:
            os.kill(os.getpid(), signum)  # handled at once, in this (main) thread

    pool.action = staticmethod(signal_before_second)
    before = signal.getsignal(signum)
    result = run(_cfg(tmp_path))
    summary, timeline = _files(tmp_path)
    # The signal asked the pool to stop; the interval it was yielding still counts.
    assert pool.instances[0].stopped >= 1
    assert len(timeline) == 2 and summary["connections"]["attempted"] == 200
    assert summary["interrupted"] is True and result.exit_code == 130
    assert signal.getsignal(signum) is before  # handlers restored


def test_a_failing_diagnosis_keeps_the_run(
    tmp_path: Path, pool: type[ScriptedPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcpchurn import runner

    def broken(timeline: object, summary: object) -> None:
        raise KeyError("headroom")

    monkeypatch.setattr(runner, "diagnose", broken)
    pool.script = [_interval(0, 100)]
    result = run(_cfg(tmp_path))
    summary, _ = _files(tmp_path)
    assert summary["warnings"] == ["the diagnosis failed (KeyError: 'headroom')"]
    assert summary["findings"] == [] and summary["connections"]["ok"] == 100
    assert result.exit_code == 0
