"""Timeline -> series: values where the timeline has them, gaps where it has nulls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.report.series import extract, sysctl

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def _lines(name: str) -> list[dict[str, Any]]:
    with open(RUNS / name / "timeline.jsonl") as f:
        return [json.loads(x) for x in f]


def test_seed_2009_series_match_the_timeline() -> None:
    lines = _lines("seed-2009")
    s = extract(lines, {"net.ipv4.tcp_max_tw_buckets": 131072})
    ts, counts = s.get("server.ct.count")
    assert list(ts) == [ln["t"] for ln in lines]
    assert list(counts) == [ln["server"]["conntrack"]["count"] for ln in lines]
    assert s.peak("server.ct.max") == 16384
    # first sample has no stat_delta (null): no drop point at t=1
    drop_t, drops = s.get("server.ct.drop")
    assert drop_t[0] == 2.0
    assert list(drops) == [ln["server"]["conntrack"]["stat_delta"]["drop"] for ln in lines[1:]]
    # errors per second: only the intervals that had any
    err_t, err = s.get("err.ETIMEDOUT")
    expected = [(ln["t"], ln["load"]["errors"]["ETIMEDOUT"]) for ln in lines
                if ln["load"]["errors"]]
    assert list(zip(err_t, err, strict=True)) == expected
    # the client's conntrack is loaded but tracks nothing: not drawn
    assert s.get("client.ct.count") == s.get("nope")
    assert s.peak("client.tw.limit") == 131072


def test_seed_2009_gaps_and_fallbacks() -> None:
    lines = _lines("seed-2009")
    s = extract(lines)
    # destinations were not dumped every 7th interval: those points are missing
    ports_t, _ = s.get("client.ports")
    assert 7.0 not in ports_t and 14.0 not in ports_t and 8.0 in ports_t
    # sockstat tw was null at t=9: the per-state TIME_WAIT count stands in
    tw_t, tw = s.get("server.tw")
    assert tw[list(tw_t).index(9.0)] == lines[8]["server"]["tcp"]["states"]["TIME_WAIT"]
    # no sysctls given: no limit line rather than a made-up one
    assert s.peak("client.tw.limit") is None


def test_healthy_run_without_server_or_conntrack() -> None:
    lines = _lines("healthy")
    s = extract(lines)
    assert not [n for n in s.names() if n.startswith("server.")]
    assert not [n for n in s.names() if ".ct." in n]
    listen_t, _ = s.get("client.listen")
    assert 5.0 not in listen_t and len(listen_t) == len(lines) - 1


@pytest.mark.parametrize("junk", [None, "12", True, [], {"x": 1}])
def test_non_numbers_are_skipped_not_crashed(junk: object) -> None:
    line = {"t": 1.0, "load": {"target_rate": junk, "achieved_rate": 5,
                               "latency_ms": {"connect": {"p50": junk}}},
            "client": {"conntrack": junk, "sockstat": {"tw": junk}, "listen": [{"queue": junk}],
                       "destinations": junk, "fds": junk},
            "server": junk}
    s = extract([line, {"t": None}, {}])
    assert list(s.get("rate.achieved")[1]) == [5.0]
    assert s.get("rate.target")[0].tolist() == []
    assert s.names() == ["rate.achieved"]


@pytest.mark.parametrize(("sysctls", "name", "want"), [
    ({"net.ipv4.tcp_max_orphans": 7}, "tcp_max_orphans", 7.0),
    ({"tcp_max_orphans": 7}, "tcp_max_orphans", 7.0),
    ({"net.ipv4.tcp_max_orphans": None}, "tcp_max_orphans", None),
    ({"net.ipv4.ip_local_port_range": "32768 60999"}, "ip_local_port_range", None),
    (None, "tcp_max_orphans", None),
])
def test_sysctl_lookup(sysctls: dict[str, Any] | None, name: str, want: float | None) -> None:
    assert sysctl(sysctls, name) == want


def test_server_limits_come_from_server_sysctls() -> None:
    lines = _lines("seed-2009")
    s = extract(lines, {"net.ipv4.tcp_max_tw_buckets": 131072,
                        "net.ipv4.tcp_max_orphans": 65536},
                {"net.ipv4.tcp_max_tw_buckets": 1000, "net.ipv4.tcp_max_orphans": None})
    assert s.peak("server.tw.limit") == 1000
    assert s.peak("client.tw.limit") == 131072
    # tcp_max_orphans is global: a server in a netns of this host shares the client's
    assert s.peak("server.orphan.limit") == 65536


def test_a_remote_servers_global_limits_are_not_guessed() -> None:
    lines = _lines("seed-2009")
    for ln in lines:
        ln["server"]["where"] = "remote http://198.18.0.2:9464/metrics"
    s = extract(lines, {"net.ipv4.tcp_max_orphans": 65536}, {})
    assert s.peak("client.orphan.limit") == 65536
    assert s.peak("server.orphan.limit") is None
