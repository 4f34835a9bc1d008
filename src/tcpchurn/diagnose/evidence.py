"""Evidence: what an evidence predicate returns, and the helpers every predicate shares.

A predicate is ``(run, side) -> Evidence | None``: it reads a run through
:class:`~tcpchurn.diagnose.series.RunData` and returns the figures that prove a limit was
reached (and when), or ``None``.  The predicates live in :mod:`tcpchurn.diagnose.tables`
(kernel tables and counters) and :mod:`tcpchurn.diagnose.connects` (what connections and
listeners experienced); the single table in :mod:`tcpchurn.diagnose.rules` names them.

The signals are KERNEL.md's catalogue (§1 A-J, §3); thresholds are the constants of
:mod:`tcpchurn.diagnose.series` so that noise (a few refused connections while a server
starts, one slow interval) does not become a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpchurn.diagnose.series import (
    ERROR_MIN,
    ERROR_SHARE,
    FULL_SHARE,
    NEAR_SHARE,
    RunData,
    crossing_time,
    error_hits,
    error_onset_time,
    per_second,
    sustained_onset,
    syn_steps,
)

TCP_TIMEWAIT_LEN_S = 60.0  # include/net/tcp.h TCP_TIMEWAIT_LEN: fixed, not a sysctl


@dataclass(frozen=True)
class Evidence:
    """What a predicate found: when, how bad, and the figures that show it."""

    onset_s: float
    severity: str  # "stopped" | "degraded" | "warning"
    figures: dict[str, Any] = field(default_factory=dict)


Predicate = Callable[[RunData, str], "Evidence | None"]


def rounded(x: float | None, nd: int = 1) -> float | None:
    """``round`` that lets ``None`` (a figure the run did not have) through."""
    return None if x is None else round(x, nd)


def series_of(run: RunData, side: str, *keys: str) -> list[float | None]:
    """One sample field per interval (``"sockstat", "tw"``), ``None`` where absent."""
    return [run.value(i, side, *keys) for i in range(len(run))]


def deltas(run: RunData, side: str, group: str, name: str) -> list[float]:
    """One ``counters_delta`` field per interval, 0 where absent."""
    return [run.delta(i, side, group, name) for i in range(len(run))]


def counter_hits(run: RunData, values: Sequence[float]) -> list[bool]:
    """A per-interval counter counts when above ERROR_MIN and 1% of attempted."""
    return [
        v >= ERROR_MIN and v >= ERROR_SHARE * run.load_num(i, "attempted")
        for i, v in enumerate(values)
    ]


def max_latency(run: RunData, first: int, kind: str, pct: str,
                actual: bool = False) -> float | None:
    """The worst per-interval latency percentile (ms) from interval ``first`` on (from
    each connection's actual start with ``actual``: RunData.latency_actual)."""
    get = run.latency_actual if actual else run.latency
    values = [get(i, kind, pct) for i in range(first, len(run))]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def common_figures(run: RunData, first: int) -> dict[str, Any]:
    """Figures every explanation may use: the rate and the client's SYN retransmits."""
    retrans = deltas(run, "client", "TcpExt", "TCPSynRetrans")
    return {
        "rate": round(run.rate(), 1),
        "syn_retrans_per_s": round(per_second(run, first, retrans), 1),
        "connect_p99_ms": rounded(max_latency(run, first, "connect", "p99")),
        "syn_steps_s": syn_steps(run, first),
    }


def level_onset(
    run: RunData,
    levels: Sequence[float | None],
    capacities: Sequence[float | None],
    extra_hits: Sequence[bool] | None = None,
) -> tuple[int, float, str] | None:
    """Onset (index, time, "full"|"near") of a table level against its capacity."""
    full = [
        (lv is not None and cap is not None and cap > 0 and lv >= FULL_SHARE * cap)
        or bool(extra_hits and extra_hits[i])
        for i, (lv, cap) in enumerate(zip(levels, capacities, strict=True))
    ]
    for share, label, hits in (
        (FULL_SHARE, "full", full),
        (
            NEAR_SHARE,
            "near",
            [
                lv is not None and cap is not None and cap > 0 and lv >= NEAR_SHARE * cap
                for lv, cap in zip(levels, capacities, strict=True)
            ],
        ),
    ):
        i0 = sustained_onset(hits)
        if i0 is None:
            continue
        cap = capacities[i0]
        cur = levels[i0]
        if cap is not None and cur is not None:
            # Full: when the level reached the capacity (or its own plateau just below).
            target = min(cap, cur) if label == "full" else share * cap
            onset = crossing_time(run, i0, target, levels)
        else:
            onset = run.start(i0)
        return i0, onset, label
    return None


def highest(values: Sequence[float | None]) -> float | None:
    """The peak of a series, ignoring missing values."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def error_evidence(run: RunData, names: Sequence[str]) -> tuple[int, float, float] | None:
    """(first index, onset time, total) of sustained errors of these kinds, or ``None``."""
    hits = error_hits(run, names)
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    total = sum(run.errors(i, *names) for i in range(len(run)))
    return i0, error_onset_time(run, i0, run.errors(i0, *names)), total


