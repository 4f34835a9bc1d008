"""Typing for the C hot path (_pump.c)."""

ACT_EVENT: int
ACT_FAIL: int
ACT_JUDGE: int
ACT_EXPIRE: int
CLOSE_SERVER: int
CLOSE_CLIENT: int
CLOSE_RESET: int

#: (fd, events, action, errno, state, sched, start, conn_t, ttfb, buf, eof)
Export = tuple[int, int, int, int, int, float, float, float, float, bytes, bool]

class Pump:
    live: int
    oldest: float
    pending: int
    event_cost: float
    def __init__(self, epfd: int, af: int, addr: tuple[str, int],
                 sources: list[tuple[str, int]], request: bytes, close_mode: int,
                 start_at: float, late_s: float, maxevents: int) -> None: ...
    def start(self, seq: int, sched: float, now: float, /) -> int: ...
    def poll(self, timeout: float, maxevents: int, until: float, /
             ) -> tuple[float, list[tuple[int, int]], list[Export]]: ...
    def expire(self, now: float, limit: float, /) -> list[Export]: ...
    def set_ok(self, eof: bool, data: bytes, /) -> None: ...
    def take(self) -> tuple[bytes, int, int, int]: ...
    def abandon(self) -> None: ...
