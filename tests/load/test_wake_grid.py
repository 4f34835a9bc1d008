"""The engine's wake-up grid: due times round up to it, never down, and a time on it stays."""

from __future__ import annotations

import pytest

from tcpchurn.load.engine import LATE_S, WAKE_GRID_S, on_grid
from tcpchurn.load.schedule import INF


@pytest.mark.parametrize("k", [0, 1, 42, 4000, 3_600_000])
def test_a_time_on_the_grid_stays_there(k: int) -> None:
    assert on_grid(k * WAKE_GRID_S) == k * WAKE_GRID_S


@pytest.mark.parametrize("t", [0.0000001, 0.0101, 1.23456789, 59.99999])
def test_other_times_round_up_to_the_next_step(t: float) -> None:
    wake = on_grid(t)
    assert t <= wake < t + WAKE_GRID_S
    assert on_grid(wake) == wake


def test_nothing_to_wait_for_stays_infinite() -> None:
    assert on_grid(INF) == INF


def test_the_grid_alone_never_makes_a_connection_late() -> None:
    # the step is the most lag the grid adds; "late" starts at LATE_S
    assert WAKE_GRID_S < LATE_S
