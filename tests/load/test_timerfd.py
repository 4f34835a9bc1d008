"""The timerfd the engine sleeps on: armed at an absolute monotonic time, readable once
expired, quiet again after clear() — checked without timing tolerances."""

from __future__ import annotations

import select
import time

from tcpchurn.load.timerfd import Timer


def test_expired_timer_is_readable_until_cleared() -> None:
    timer = Timer()
    ep = select.epoll()
    try:
        ep.register(timer.fd, select.EPOLLIN)
        assert ep.poll(0) == []  # never armed: silent
        timer.arm(time.monotonic() - 1.0)  # already in the past: fires at once
        assert ep.poll(1.0) == [(timer.fd, select.EPOLLIN)]
        timer.clear()
        assert ep.poll(0) == []
        timer.arm(time.monotonic() + 3600)  # far future: silent
        assert ep.poll(0) == []
        timer.arm(time.monotonic() - 1.0)  # re-arming replaces the previous expiry
        assert ep.poll(1.0) == [(timer.fd, select.EPOLLIN)]
    finally:
        ep.close()
        timer.close()
