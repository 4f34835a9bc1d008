"""sampling.Side: deltas per side, and a remote exporter that stops answering mid-run."""

from __future__ import annotations

from typing import Any

import pytest

from tcpchurn.errors import TargetError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.sampling import Side


class FlakyRemote:
    """Answers the scripted way: a dict is a sample, an exception is raised."""

    def __init__(self, script: list[dict[str, Any] | Exception]) -> None:
        self.script = script

    def sample(self) -> dict[str, Any]:
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def _remote_side(script: list[dict[str, Any] | Exception]) -> Side:
    side = Side()
    side.remote = FlakyRemote(script)
    return side


def test_an_unreachable_exporter_fails_the_baseline() -> None:
    side = _remote_side([TargetError("http://server.example:9464/metrics: connection refused")])
    with pytest.raises(TargetError, match="connection refused"):
        side.sample(detail=False)


def test_a_lost_scrape_mid_run_is_null_and_remembered() -> None:
    side = _remote_side([{"t": 0.0}, {"t": 1.0}, TargetError("timed out"), {"t": 3.0}])
    assert side.sample(False) == {"t": 0.0}
    assert side.sample(False) == {"t": 1.0}
    assert side.sample(False) is None
    assert side.sample(False) == {"t": 3.0}
    assert side.lost == ["timed out"]


def test_local_side_has_deltas_from_the_second_sample_on() -> None:
    side = Side(Procfs())
    first = side.sample(detail=False)
    second = side.sample(detail=False)
    assert first is not None and second is not None
    assert first["counters_delta"] is None and first["interval"] is None
    assert second["counters_delta"] is not None and second["interval"] > 0
    assert second["t"] >= first["t"]
    side.close()


def test_the_state_dump_is_left_to_full_samples_while_it_is_dear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A per-interval sample dumps the states only while the last dump took less than
    STATES_BUDGET_S; full samples always dump, and measure the walk again."""
    from tcpchurn.kernel.snapshot import KernelSnapshot
    from tcpchurn.sampling import STATES_BUDGET_S

    now = [0.0]
    cost = [STATES_BUDGET_S * 5]  # what a dump of the states takes now
    asked: list[tuple[bool, bool]] = []
    real_take = KernelSnapshot.take

    def take(procfs: Procfs, **kw: Any) -> KernelSnapshot:
        asked.append((kw["detail"], kw["states"]))
        if kw["states"]:
            now[0] += cost[0]
        return real_take(procfs, **kw)

    monkeypatch.setattr(KernelSnapshot, "take", take)
    side = Side(Procfs(), clock=lambda: now[0])
    try:
        for detail in (False, False, False, True, False):
            side.sample(detail)
        cost[0] = STATES_BUDGET_S / 10  # the TIME_WAIT sockets are gone: cheap again
        for detail in (True, False):
            side.sample(detail)
    finally:
        side.close()
    assert asked == [(False, True), (False, False), (False, False), (True, True),
                     (False, False), (True, True), (False, True)]


def test_a_sample_without_the_state_dump_says_so() -> None:
    side = Side(Procfs())
    side.walk_s = 1.0  # as after a dear dump
    try:
        sample = side.sample(detail=False)
    finally:
        side.close()
    assert sample is not None
    assert sample["tcp"]["source"] == "sockstat"
    assert sample["tcp"]["states"]["TIME_WAIT"] == sample["sockstat"]["tw"]
    assert sample["tcp"]["states"]["ESTABLISHED"] is None
