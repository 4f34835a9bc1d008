"""The worker's background emitter (emitter.py): order, errors, and the switch interval."""

from __future__ import annotations

import contextlib
import select
import sys
import threading
import time

import pytest

from tcpchurn.load.config import LoadConfig, parse_target
from tcpchurn.load.emitter import SWITCH_S, Emitter
from tcpchurn.load.engine import Engine
from tcpchurn.load.stats import IntervalStats
from tcpchurn.load.timerfd import Timer


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


def test_the_engine_hands_an_interval_over_only_when_it_is_about_to_wait() -> None:
    """At an interval's end the engine keeps the interval until its loop waits
    (Engine._hand_over): woken at once, the emitter would share the GIL with the rest of
    the loop's end-of-interval work, while the connections due meanwhile wait."""
    cfg = LoadConfig(target=parse_target("127.0.0.1:9"), rate=100.0, duration=1.0,
                     timeout=1.0).validate()
    out: list[int] = []
    engine = Engine(cfg, lambda st: None)
    engine._emitter = Emitter(lambda st: out.append(st.index), lambda st: None)
    with contextlib.closing(select.epoll()) as ep, contextlib.closing(Timer()) as timer:
        engine._emit(3, 3.0, 4.0)
        time.sleep(0.05)  # an emitter given it would have emitted it by now
        assert out == []
        engine._poll(ep, timer, 0.0)  # the loop looks for events: handed over
        engine._emitter.close()
    assert out == [3]
