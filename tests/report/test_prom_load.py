"""Load metrics: scrape the registry, parse it back, compare with the intervals fed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tcpchurn.report.prom_load import BUCKETS, RunMetrics, cdf_points, mean_of, share_below
from tcpchurn.report.prometheus import KernelMetrics

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def _lines(name: str) -> list[dict[str, Any]]:
    with open(RUNS / name / "timeline.jsonl") as f:
        return [json.loads(x) for x in f]


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def seed() -> tuple[list[dict[str, Any]], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    lines = _lines("seed-2009")
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    kernel = KernelMetrics(registry, "client")  # the same registry as the kernel metrics
    for ln in lines:
        metrics.update(ln["load"])
        kernel.update(ln["client"])
    return lines, _scrape(registry)


def test_counters_are_the_sums_of_the_intervals(seed: Any) -> None:
    lines, m = seed
    for key in ("attempted", "ok", "late", "skipped", "taken_over"):
        assert m[(f"tcpchurn_connections_{key}_total", ())] == sum(ln["load"].get(key, 0)
                                                                   for ln in lines)
    assert m[("tcpchurn_connections_failed_total", (("error", "ETIMEDOUT"),))] == sum(
        ln["load"]["errors"].get("ETIMEDOUT", 0) for ln in lines)
    # the kernel metrics are on the same registry, untouched
    assert m[("tcpchurn_tcp_sockets", (("side", "client"), ("state", "SYN_SENT")))] == \
        lines[-1]["client"]["tcp"]["states"]["SYN_SENT"]


def test_gauges_are_the_last_interval(seed: Any) -> None:
    lines, m = seed
    last = lines[-1]["load"]
    assert m[("tcpchurn_target_connection_rate", ())] == last["target_rate"]
    assert m[("tcpchurn_achieved_connection_rate", ())] == last["achieved_rate"]
    assert m[("tcpchurn_connections_inflight", ())] == last["inflight"]


@pytest.mark.parametrize("phase", ["connect", "ttfb", "total", "schedule_lag"])
def test_histogram_counts_are_consistent(seed: Any, phase: str) -> None:
    lines, m = seed
    name = "tcpchurn_connection_latency_seconds"
    count = m[(f"{name}_count", (("phase", phase),))]
    assert count == sum(ln["load"]["latency_ms"][phase]["count"] for ln in lines)
    buckets = [m[(f"{name}_bucket", (("le", "+Inf" if math.isinf(b) else repr(b)),
                                      ("phase", phase)))] for b in BUCKETS]
    assert buckets == sorted(buckets) and buckets[-1] == count
    # every connection is at or under the largest max seen, so under the next bucket
    top = max(ln["load"]["latency_ms"][phase]["max"] or 0 for ln in lines) / 1000
    assert buckets[next(i for i, b in enumerate(BUCKETS) if b >= top)] == count
    # at least half of each interval is under its p50
    p50s = [ln["load"]["latency_ms"][phase] for ln in lines]
    bound = max(p["p50"] for p in p50s if p["p50"] is not None) / 1000
    i = next(i for i, b in enumerate(BUCKETS) if b >= bound)
    assert buckets[i] >= sum(p["count"] for p in p50s) / 2
    total_sum = m[(f"{name}_sum", (("phase", phase),))]
    assert 0 < total_sum <= count * top


def test_retransmit_clusters_land_in_their_buckets(seed: Any) -> None:
    _, m = seed
    # the 2009 story: connects that got through after the 1 s and 3 s SYN retransmits
    le = {b: m[("tcpchurn_connection_latency_seconds_bucket",
                (("le", repr(b)), ("phase", "connect")))] for b in (0.5, 1.5, 3.5)}
    assert le[0.5] < le[1.5] < le[3.5]


def test_failures_without_a_name_are_counted_as_unknown() -> None:
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    metrics.update({"attempted": 10, "ok": 5, "failed": 5, "errors": {"ECONNREFUSED": 3}})
    metrics.update({"attempted": None, "failed": "x", "errors": None, "latency_ms": None})
    m = _scrape(registry)
    assert m[("tcpchurn_connections_failed_total", (("error", "ECONNREFUSED"),))] == 3
    assert m[("tcpchurn_connections_failed_total", (("error", "unknown"),))] == 2
    assert m[("tcpchurn_connections_attempted_total", ())] == 10
    assert ("tcpchurn_target_connection_rate", ()) not in m  # never given: not exported


def test_help_text_and_names_follow_conventions() -> None:
    registry = CollectorRegistry()
    RunMetrics(registry).update(_lines("healthy")[0]["load"])
    text = generate_latest(registry).decode()
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("tcpchurn_")
        assert fam.documentation, fam.name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples)
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds")


@pytest.mark.parametrize(("pcts", "bound", "share"), [
    ({"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}, 0.001, 0.5),
    ({"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}, 0.0015, 0.7),
    ({"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}, 0.0005, 0.25),
    ({"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0}, 0.005, 1.0),
    ({"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0}, 0.001, 1.0),
    ({"p50": 2.0, "p90": 1.0, "max": 3.0}, 0.002, 0.9),  # non-monotonic input clipped
])
def test_share_below(pcts: dict[str, float], bound: float, share: float) -> None:
    assert share_below(cdf_points(pcts), bound) == pytest.approx(share)


def test_mean_of_a_uniform_distribution() -> None:
    # 0..max uniform: the mean is max / 2
    pts = cdf_points({"p50": 5.0, "p90": 9.0, "p99": 9.9, "p999": 9.99, "max": 10.0})
    assert mean_of(pts) == pytest.approx(0.005)


def test_served_over_http_next_to_the_kernel_metrics() -> None:
    import socket
    import urllib.request

    from tcpchurn.report.prometheus import make_registry, start_server

    registry = make_registry()
    metrics = RunMetrics(registry)
    KernelMetrics(registry, "client").update(_lines("healthy")[-1]["client"])
    for ln in _lines("healthy"):
        metrics.update(ln["load"])
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = start_server(registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        stop()
    names = {fam.name for fam in text_string_to_metric_families(text)}
    assert {"tcpchurn_connections_attempted", "tcpchurn_connection_latency_seconds",
            "tcpchurn_tcp_time_wait"} <= names
    samples = {s.name: s.value for fam in text_string_to_metric_families(text)
               for s in fam.samples if not s.labels}
    assert samples["tcpchurn_connections_attempted_total"] == sum(
        ln["load"]["attempted"] for ln in _lines("healthy"))


def test_taken_over_is_a_counter_of_its_own() -> None:
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    metrics.update({"attempted": 10, "taken_over": 3})
    metrics.update({"attempted": 10, "taken_over": 4})
    metrics.update({"attempted": 10})  # a timeline from before the lanes: none
    m = _scrape(registry)
    assert m[("tcpchurn_connections_taken_over_total", ())] == 7
    assert m[("tcpchurn_connections_attempted_total", ())] == 30
