"""Typing for the C hot path (_pump.c)."""

from array import array
from typing import Any

Buffer = array[float]

ACT_EVENT: int
ACT_FAIL: int
ACT_JUDGE: int
ACT_EXPIRE: int
CLOSE_SERVER: int
CLOSE_CLIENT: int
CLOSE_RESET: int
LANE_BYTES: int
LANE_RING: int

#: (fd, events, action, errno, state, sched, start, conn_t, ttfb, buf, eof, done)
Export = tuple[int, int, int, int, int, float, float, float, float, bytes, bool, float]

class Pump:
    live: int
    backlog: int
    next_due: float
    connecting: int
    naps: int
    buffered: int
    event_cost: float
    def __init__(self, epfd: int, af: int, addr: tuple[str, int],
                 sources: list[tuple[str, int]], request: bytes, close_mode: int,
                 start_at: float, late_s: float, maxevents: int, http: bool = True
                 ) -> None: ...
    def start(self, seq: int, sched: float, now: float, /) -> int: ...
    def poll(self, timeout: float, maxevents: int, until: float, /
             ) -> tuple[float, list[tuple[int, int]], list[Export]]: ...
    def pace(self, timeout: float, skip_lag: float, max_inflight: int, batch: int,
             grid: float, spin: float, timer_fd: int, steal_lag: float, coalesce: bool, /
             ) -> None: ...
    def share(self, board: Any, lane: int, lanes: int, /) -> None: ...
    def push(self, times: Buffer, /) -> int: ...
    def drop(self) -> int: ...
    def run(self, next_after: float, deadline: float, others_live: int, /
            ) -> tuple[int, float, list[tuple[int, int]], list[Export],
                       tuple[int, float, float] | None]: ...
    def expire(self, now: float, limit: float, /) -> list[Export]: ...
    def set_ok(self, eof: bool, data: bytes, /) -> None: ...
    def take(self) -> tuple[bytes, int, int, int, int, list[tuple[int, int, int]]]: ...
    def _record(self, h: int, seconds: float, /) -> None: ...
    def bind(self, counts: list[Any], unit_magnitude: int,
             sub_bucket_half_count_magnitude: int, sub_bucket_half_count: int,
             sub_bucket_mask: int, highest: int, /) -> None: ...
    def abandon(self) -> None: ...
