"""Reading a run's timeline as series: the evidence predicates' only view of the data.

A timeline (docs/schema.md §3) is a list of interval dicts ``{"t", "load", "client",
"server"}``.  :class:`RunData` wraps it with the summary and the sysctls and answers the
questions every rule asks: this interval's error count, a TcpExt delta on one side, a
table's level, whether a condition is *sustained*.

Sustained means (documented in docs/limits.md, "Noise"):

* the condition holds in at least :data:`SUSTAIN` consecutive intervals, or
* it holds from some interval to the end of the run (a limit reached in the last second
  is still a limit), unless the rule asks for strict runs (latency rules do: a single
  slow interval is a spike, not a limit).

Missing data is normal: a sample may be ``null`` (no server side watched), a key may be
absent or ``null`` on an older kernel; every accessor then returns 0 or ``None``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.jsonpath import dig as _get
from tcpchurn.kernel.sysctl import SYSCTLS

# Sysctls one value of which holds for every namespace of a host (KERNEL.md §2).
GLOBAL_SYSCTLS = frozenset(s.name for s in SYSCTLS if s.scope == "global")

SUSTAIN = 2  # consecutive intervals for a condition to count as a limit, not noise
ERROR_SHARE = 0.01  # an error kind counts in an interval above 1% of attempted ...
ERROR_MIN = 3  # ... and at least 3 occurrences (a stray failure is not a limit)
FULL_SHARE = 0.98  # a table at 98% of its capacity is full (counts lag by a sample)
NEAR_SHARE = 0.90  # at 90% at peak: a warning, the next run will hit it
STOPPED_OK_SHARE = 0.5  # fewer than half the connections succeeding: the run stopped
DEGRADED_OK_SHARE = 0.99  # 1% or more failing: the run degraded

# Initial RTO 1 s, doubling (RFC 6298 §2, net/ipv4/tcp_timer.c): a SYN dropped once shows
# as a connect time of ~1 s, twice ~3 s, then 7, 15, 31, 63 s.
SYN_RETRANSMIT_STEPS_S = (1.0, 3.0, 7.0, 15.0, 31.0, 63.0)

Json = Mapping[str, Any]


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def is_loopback_target(target: object) -> bool:
    """True for ``http://127.0.0.1:8080/``, ``[::1]:80``, ``localhost:80``.

    >>> is_loopback_target("http://127.0.0.1:8080/"), is_loopback_target("198.18.0.2:80")
    (True, False)
    """
    if not isinstance(target, str) or not target:
        return False
    text = target if "//" in target else "//" + target
    host = urlsplit(text).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_port(target: object) -> int | None:
    """The port of ``http://host:8080/`` (80 for a bare http URL), ``None`` if unknown."""
    if not isinstance(target, str) or not target:
        return None
    text = target if "//" in target else "//" + target
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return {"http": 80, "https": 443}.get(parts.scheme)
    return port


@dataclass
class RunData:
    """A timeline, its summary and sysctls, with the accessors rules need."""

    timeline: Sequence[Json]
    summary: Json
    sysctls: Sysctls = field(default_factory=Sysctls)
    server_sysctls: Sysctls | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.summary, Mapping):
            self.summary = {}
        self.timeline = [row for row in self.timeline if isinstance(row, Mapping)]
        self.loopback = is_loopback_target(self.summary.get("target"))

    def sysctls_for(self, side: str) -> Sysctls:
        """The sysctls known for ``side``: the run's (the client's namespace) for the
        client and for a server sharing it; only the global ones for a server in another
        namespace of this host (a new netns starts from kernel defaults, KERNEL.md §2);
        none for a remote server -- unless the run recorded the server's own."""
        if side == "client" or self.loopback or not self.has_side("server"):
            return self.sysctls
        if self.server_sysctls is not None:
            return self.server_sysctls
        where = ""
        for i in range(len(self)):
            sample = self.sample(i, "server")
            if sample is not None:
                where = str(sample.get("where") or "")
                break
        if where.startswith(("netns", "pid", "host")):
            return self.sysctls.restricted(GLOBAL_SYSCTLS)
        return self.sysctls.restricted(frozenset())

    def __len__(self) -> int:
        return len(self.timeline)

    # --- time -------------------------------------------------------------------------
    def t(self, i: int) -> float:
        """End of interval ``i`` in seconds since the start."""
        return _num(self.timeline[i].get("t"))

    def start(self, i: int) -> float:
        """Start of interval ``i``: the previous interval's end (0 for the first)."""
        return self.t(i - 1) if i > 0 else 0.0

    def length(self, i: int) -> float:
        """Seconds covered by interval ``i`` (at least a millisecond)."""
        return max(self.t(i) - self.start(i), 1e-3)

    # --- load -------------------------------------------------------------------------
    def load(self, i: int) -> Json:
        """The ``load`` dict of interval ``i`` (empty if absent)."""
        value = self.timeline[i].get("load")
        return value if isinstance(value, Mapping) else {}

    def load_num(self, i: int, key: str) -> float:
        """A number from ``load`` (0 when absent or null)."""
        return _num(self.load(i).get(key))

    def errors(self, i: int, *names: str) -> float:
        """How many of these error kinds interval ``i`` counted."""
        errs = self.load(i).get("errors")
        if not isinstance(errs, Mapping):
            return 0.0
        return sum(_num(errs.get(n)) for n in names)

    def latency(self, i: int, kind: str, pct: str) -> float | None:
        """A latency percentile in ms (``kind`` connect/ttfb/total/schedule_lag)."""
        value = _get(self.load(i), "latency_ms", kind, pct)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def latency_actual(self, i: int, kind: str, pct: str) -> float | None:
        """The same from each connection's *actual* start (docs/schema.md §2), which
        leaves the generator's own lag out: a generator 5 s behind put connect p90 at
        5,001 ms from the schedule, "on" the 3 s SYN step, with no SYN retransmitted.
        Timelines without it (older ones) give :meth:`latency`."""
        value = _get(self.load(i), "latency_from_actual_start_ms", kind, pct)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return self.latency(i, kind, pct)

    def rate(self) -> float:
        """The run's target rate (summary, else the timeline's highest)."""
        rate = _num(self.summary.get("target_rate"))
        if rate <= 0 and self.timeline:
            rate = max(self.load_num(i, "target_rate") for i in range(len(self)))
        return rate

    # --- kernel samples ---------------------------------------------------------------
    def sample(self, i: int, side: str) -> Json | None:
        """The kernel sample of ``side`` in interval ``i``.

        With a loopback target and no separate server sample, the client's namespace IS
        the server's, so the client sample answers for the server (its TcpExt counters
        include the listener's ListenOverflows).
        """
        row = self.timeline[i]
        value = row.get(side)
        if side == "server" and not isinstance(value, Mapping) and self.loopback:
            value = row.get("client")
        return value if isinstance(value, Mapping) else None

    def entries(self, i: int, side: str, key: str) -> list[Json]:
        """The dicts of a list field of a sample (``listen``, ``destinations``)."""
        value = _get(self.sample(i, side), key)
        if not isinstance(value, Sequence) or isinstance(value, str):
            return []
        return [item for item in value if isinstance(item, Mapping)]

    def has_side(self, side: str) -> bool:
        """True when at least one interval has a sample for ``side``."""
        return any(self.sample(i, side) is not None for i in range(len(self)))

    def value(self, i: int, side: str, *keys: str) -> float | None:
        """A number deep in a sample (``"sockstat", "tw"``), ``None`` when absent."""
        value = _get(self.sample(i, side), *keys)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def delta(self, i: int, side: str, group: str, name: str) -> float:
        """A ``counters_delta`` value (``"TcpExt", "ListenOverflows"``), 0 when absent."""
        return _num(_get(self.sample(i, side), "counters_delta", group, name))

    def closes_first(self) -> str:
        """Which side closed first: the run's ``config.close`` if given, else inferred.

        TIME_WAIT is held by the side that closes first (RFC 793 §3.5), so the side whose
        sockstat ``tw`` is larger is the one that closed first.
        """
        close = _get(self.summary, "config", "close")
        if close in ("client", "server", "reset"):
            return str(close)
        if not self.timeline:
            return "server"
        # The client's own TIME_WAIT sockets have the target as their remote end.
        port = target_port(self.summary.get("target"))
        for i in range(len(self)):
            for dest in self.entries(i, "client", "destinations"):
                remote = str(_get(dest, "remote") or "")
                if port is not None and remote.endswith(f":{port}"):
                    if _num(_get(dest, "states", "TIME_WAIT")) >= ERROR_MIN:
                        return "client"
        if self.sample(0, "server") is self.sample(0, "client"):
            return "server"  # one namespace and no destinations: HTTP/1.0's server-closes
        peaks = {}
        for side in ("client", "server"):
            peaks[side] = peak(self, side, "sockstat", "tw") or 0.0
        return "client" if peaks["client"] > peaks["server"] else "server"


def sustained_onset(hits: Sequence[bool], strict: bool = False) -> int | None:
    """The first interval index where a condition becomes sustained, else ``None``.

    >>> sustained_onset([True, False, False, True, True]), sustained_onset([False, True])
    (3, 1)
    >>> sustained_onset([False, True], strict=True) is None
    True
    """
    n = len(hits)
    for i in range(n):
        if not hits[i]:
            continue
        run_end = i
        while run_end < n and hits[run_end]:
            run_end += 1
        if run_end - i >= SUSTAIN or (run_end == n and not strict):
            return i
    return None


def error_hits(run: RunData, names: Sequence[str]) -> list[bool]:
    """Per interval: did these errors exceed :data:`ERROR_MIN` and :data:`ERROR_SHARE`?"""
    hits = []
    for i in range(len(run)):
        count = run.errors(i, *names)
        attempted = max(run.load_num(i, "attempted"), 1.0)
        hits.append(count >= ERROR_MIN and count >= ERROR_SHARE * attempted)
    return hits


def ok_share(run: RunData, first: int) -> float:
    """Share of attempted connections that succeeded from interval ``first`` on."""
    attempted = sum(run.load_num(i, "attempted") for i in range(first, len(run)))
    ok = sum(run.load_num(i, "ok") for i in range(first, len(run)))
    return ok / attempted if attempted > 0 else 1.0


def impact_severity(run: RunData, first: int) -> str:
    """``stopped`` / ``degraded`` / ``warning`` from the success share after the onset."""
    share = ok_share(run, first)
    if share < STOPPED_OK_SHARE:
        return "stopped"
    if share < DEGRADED_OK_SHARE:
        return "degraded"
    return "warning"


def crossing_time(run: RunData, i: int, level: float, levels: Sequence[float | None]) -> float:
    """When ``levels`` reached ``level`` inside interval ``i``.

    A table fills linearly until it is full and then stays flat, so interpolating between
    this interval's samples would put the onset at the interval's end; instead the growth
    rate is taken from the steeper of this and the previous interval (the rate the table
    was filling at) and projected from the previous level.

    >>> run = RunData([{"t": float(t)} for t in range(1, 4)], {})
    >>> crossing_time(run, 2, 2384.0, [1000.0, 2000.0, 2384.0])
    2.384
    """
    start, end = run.start(i), run.t(i)
    prev = levels[i - 1] if i > 0 else None
    cur = levels[i]
    if prev is None or cur is None or prev >= level:
        return start
    slopes = [cur - prev]
    before = levels[i - 2] if i > 1 else None
    if before is not None:
        slopes.append((prev - before) * (end - start) / run.length(i - 1))
    slope = max(slopes)
    if slope <= 0:
        return start
    return min(end, start + (level - prev) / slope * (end - start))


def error_onset_time(run: RunData, i: int, count: float) -> float:
    """When errors began inside interval ``i``: errors arriving at the full rate after
    the onset fill the interval's tail, so the onset is ``end - count/rate``."""
    rate = run.load_num(i, "target_rate") or run.rate()
    if rate <= 0:
        return run.start(i)
    return max(run.start(i), run.t(i) - count / rate)


def near_syn_step(ms: float | None, tolerance: float = 0.2) -> float | None:
    """The SYN-retransmit step (s) a latency in ms sits on (within 20%), else ``None``.

    Callers pass connect latencies from the actual start (:meth:`RunData.latency_actual`),
    which may still sit slightly above a step; a step is matched from 10% below to 20%
    above.

    >>> near_syn_step(1030.0), near_syn_step(3100.0), near_syn_step(2000.0)
    (1.0, 3.0, None)
    """
    if ms is None:
        return None
    s = ms / 1000.0
    for step in SYN_RETRANSMIT_STEPS_S:
        if step * 0.9 <= s <= step * (1.0 + tolerance):
            return step
    return None


def syn_steps(run: RunData, first: int = 0) -> list[float]:
    """SYN-retransmit steps that connect p50/p90/p99/max sat on from interval ``first`` on."""
    seen: set[float] = set()
    for i in range(first, len(run)):
        for pct in ("p50", "p90", "p99", "max"):
            step = near_syn_step(run.latency_actual(i, "connect", pct))
            if step is not None:
                seen.add(step)
    return sorted(seen)


def peak(run: RunData, side: str, *keys: str) -> float | None:
    """The highest value of a sample field over the run, ``None`` if never present."""
    values = [run.value(i, side, *keys) for i in range(len(run))]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def per_second(run: RunData, first: int, values: Sequence[float]) -> float:
    """Mean per-second rate of per-interval ``values`` from interval ``first`` on."""
    seconds = sum(run.length(i) for i in range(first, len(run)))
    return sum(values[first:]) / seconds if seconds > 0 else 0.0
