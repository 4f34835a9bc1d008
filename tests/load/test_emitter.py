"""The worker's background emitter (emitter.py): order, errors, and the switch interval."""

from __future__ import annotations

import sys
import threading

import pytest

from tcpchurn.load.emitter import SWITCH_S, Emitter
from tcpchurn.load.stats import IntervalStats


def test_intervals_go_out_in_order_and_all_before_close_returns() -> None:
    out: list[tuple[str, int, str]] = []
    main = threading.get_ident()

    def emit(st: IntervalStats) -> None:
        out.append(("emit", st.index, "thread" if threading.get_ident() != main else "main"))

    def after(st: IntervalStats) -> None:
        out.append(("after", st.index, "thread" if threading.get_ident() != main else "main"))

    em = Emitter(emit, after)
    for i in range(50):
        em.put(IntervalStats(i))
    em.close()
    assert out == [(step, i, "thread") for i in range(50) for step in ("emit", "after")]


def test_an_emit_error_reaches_the_load_loop() -> None:
    def emit(st: IntervalStats) -> None:
        if st.index == 1:
            raise BrokenPipeError("the parent is gone")

    em = Emitter(emit, lambda st: None)
    em.put(IntervalStats(0))
    em.put(IntervalStats(1))
    with pytest.raises(BrokenPipeError):
        for i in range(2, 10_000):  # raised at a later put (once the thread has failed)
            em.put(IntervalStats(i))
            em._thread.join(0.001)
        em.close()
    with pytest.raises(BrokenPipeError):
        em.close()  # and again at close


def test_the_switch_interval_is_short_while_it_runs_and_restored_after() -> None:
    before = sys.getswitchinterval()
    em = Emitter(lambda st: None, lambda st: None)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_S)
    em.close()
    assert sys.getswitchinterval() == before
