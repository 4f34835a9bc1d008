"""Prometheus metrics of the load (docs/schema.md §2), on the kernel metrics' registry.

``tcpchurn run --prometheus PORT`` feeds every load interval to :class:`RunMetrics`; a
scrape then sees, next to the kernel tables of :mod:`tcpchurn.report.prometheus`::

    tcpchurn_connections_attempted_total            connections started
    tcpchurn_connections_ok_total                   completed (response read, or connected)
    tcpchurn_connections_failed_total{error=...}    failed, by errno name (schema §7)
    tcpchurn_connections_late_total                 started > 1 ms after their schedule
    tcpchurn_connections_skipped_total              due but never started
    tcpchurn_connections_taken_over_total           started by another worker (theirs held up)
    tcpchurn_connections_inflight                   open now
    tcpchurn_target_connection_rate                 new connections/s the schedule asks for
    tcpchurn_achieved_connection_rate               new connections/s started, last interval
    tcpchurn_connection_latency_seconds{phase=connect|ttfb|total|schedule_lag}  histogram

Names follow https://prometheus.io/docs/practices/naming/ (``tcpchurn_`` prefix, seconds,
``_total`` counters). The latency histogram is rebuilt from each interval's percentiles
(the interval JSON carries p50/p90/p99/p999/max, not the HdrHistogram itself): the share
of connections under a bucket bound is interpolated linearly between those percentiles, so
bucket counts are right to within the percentile resolution, and ``_count`` is exact.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

PHASES = ("connect", "ttfb", "total", "schedule_lag")
# Seconds. Fine steps below 100 ms where loopback and LAN connects live, then bounds just
# above 1, 3, 7, 15, 31, 63 and 127 s: a SYN that is dropped (conntrack full, SYN queue
# full) is retransmitted after 1 s and then with doubling back-off (TCP_TIMEOUT_INIT,
# RFC 6298 §5.5; net/ipv4/tcp_timer.c), so those clusters each get their own bucket.
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 127.5, float("inf"))
_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def cdf_points(percentiles_ms: Mapping[str, Any]) -> list[tuple[float, float]]:
    """``(seconds, share)`` points of the distribution, starting at ``(0, 0)``.

    >>> cdf_points({"p50": 1.0, "p90": 2.0, "p99": None, "max": 4.0})
    [(0.0, 0.0), (0.001, 0.5), (0.002, 0.9), (0.004, 1.0)]
    """
    pts = [(0.0, 0.0)]
    for key, share in _QUANTILES:
        v = _num(percentiles_ms.get(key))
        if v is None:
            continue
        # Percentiles are monotonic by definition; rounding in the producer may break it.
        pts.append((max(v / 1000.0, pts[-1][0]), share))
    return pts


def share_below(points: Sequence[tuple[float, float]], bound: float) -> float:
    """Interpolated share of values ``<= bound`` on the piecewise-linear CDF ``points``."""
    if bound >= points[-1][0]:
        return 1.0 if points[-1][1] >= 1.0 or bound == float("inf") else points[-1][1]
    xs = [p[0] for p in points]
    i = bisect.bisect_right(xs, bound)  # points[i-1].x <= bound < points[i].x
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (bound - x0) / (x1 - x0)


def mean_of(points: Sequence[tuple[float, float]]) -> float:
    """Mean of the piecewise-linear CDF (each segment's mass at its midpoint)."""
    return sum((y1 - y0) * (x0 + x1) / 2 for (x0, y0), (x1, y1) in pairwise(points))


def _le(bound: float) -> str:
    """A bucket bound as the exposition format writes it (``+Inf``, ``0.001``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class _Histogram:
    """Cumulative bucket counts and sum of one phase, fed one interval at a time."""

    def __init__(self) -> None:
        self.cumulative = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def add(self, percentiles_ms: Mapping[str, Any]) -> None:
        n = percentiles_ms.get("count")
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            return
        pts = cdf_points(percentiles_ms)
        if len(pts) < 2:
            return
        for i, bound in enumerate(BUCKETS):
            # round() keeps each interval's counts integers and monotonic in the bound;
            # +Inf always gets every connection so _count == the +Inf bucket exactly.
            self.cumulative[i] += n if bound == float("inf") else round(
                n * share_below(pts, bound))
        self.count += n
        self.sum += n * mean_of(pts)


class RunMetrics:
    """Load metrics of one run on ``registry``; :meth:`update` with every load interval."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._totals = {"attempted": 0, "ok": 0, "late": 0, "skipped": 0, "taken_over": 0}
        self._failed: dict[str, int] = {}
        self._gauges: dict[str, float] = {}
        self._hist = {phase: _Histogram() for phase in PHASES}
        registry.register(_LoadCollector(self))

    def update(self, load_interval: Mapping[str, Any]) -> None:
        """Add one schema §2 interval: counters grow, gauges take its values."""
        with self._lock:
            for key in self._totals:
                n = load_interval.get(key)
                if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    self._totals[key] += n
            named = 0
            errors = load_interval.get("errors")
            if isinstance(errors, Mapping):
                for name, n in errors.items():
                    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                        self._failed[str(name)] = self._failed.get(str(name), 0) + n
                        named += n
            failed = load_interval.get("failed")
            if isinstance(failed, int) and failed > named:
                # failures without an error name still count, so sum(failed) == failed
                self._failed["unknown"] = self._failed.get("unknown", 0) + failed - named
            for key in ("target_rate", "achieved_rate", "inflight"):
                v = _num(load_interval.get(key))
                if v is not None:
                    self._gauges[key] = v
            latency = load_interval.get("latency_ms")
            if isinstance(latency, Mapping):
                for phase, hist in self._hist.items():
                    p = latency.get(phase)
                    if isinstance(p, Mapping):
                        hist.add(p)

    def families(self) -> list[Metric]:
        """The metric families as of now (what a scrape returns)."""
        with self._lock:
            out: list[Metric] = []
            for key, doc in (
                ("attempted", "Connections started (connect() called)."),
                ("ok", "Connections that completed (response read, or connected)."),
                ("late", "Connections started more than 1 ms after their scheduled time."),
                ("skipped", "Connections due but never started (max in-flight or saturated)."),
                ("taken_over", "Connections started by another worker than the one whose "
                               "share they were, which was held up (its CPU stalled or busy)."),
            ):
                c = CounterMetricFamily(f"tcpchurn_connections_{key}", doc)
                c.add_metric([], float(self._totals[key]))
                out.append(c)
            failed = CounterMetricFamily(
                "tcpchurn_connections_failed",
                "Connections that failed, by errno name or tcpchurn error (ETIMEDOUT, ...).",
                labels=["error"])
            for name, n in sorted(self._failed.items()):
                failed.add_metric([name], float(n))
            out.append(failed)
            for key, name, doc in (
                ("target_rate", "tcpchurn_target_connection_rate",
                 "New connections per second the schedule asks for."),
                ("achieved_rate", "tcpchurn_achieved_connection_rate",
                 "New connections per second started in the last interval."),
                ("inflight", "tcpchurn_connections_inflight",
                 "Connections open at the end of the last interval."),
            ):
                if key in self._gauges:
                    g = GaugeMetricFamily(name, doc)
                    g.add_metric([], self._gauges[key])
                    out.append(g)
            h = HistogramMetricFamily(
                "tcpchurn_connection_latency_seconds",
                "Latency from the scheduled start: connect, time to first byte, total, and "
                "schedule lag (rebuilt from each interval's percentiles).",
                labels=["phase"])
            for phase, hist in self._hist.items():
                h.add_metric([phase], [(_le(b), float(c))
                                       for b, c in zip(BUCKETS, hist.cumulative, strict=True)],
                             hist.sum)
            out.append(h)
            return out


class _LoadCollector(Collector):
    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics.families()
