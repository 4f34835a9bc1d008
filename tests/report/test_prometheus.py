"""report/prometheus: §1 samples exposed as metric families, parsed back by the client's parser."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tcpchurn.report import prometheus

SAMPLES = Path(__file__).parent.parent / "fixtures" / "watch" / "samples.json"


def sample_of(name: str) -> dict[str, Any]:
    """A recorded §1 sample (tests/fixtures/watch/samples.json)."""
    data: dict[str, Any] = json.loads(SAMPLES.read_text())[name]
    return data


def scrape(registry: Any) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def by_labels(family: Any, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in match.items()) and not s.name.endswith("_created")
    }


def test_two_sides_share_families_with_a_side_label() -> None:
    registry = prometheus.make_registry()
    client = prometheus.KernelMetrics(registry, "client")
    server = prometheus.KernelMetrics(registry, "server")
    sample = {
        "client": sample_of("client_with_destinations"),
        "server": sample_of("conntrack_full_server"),
    }
    client.update(sample["client"])
    server.update(sample["server"])
    fams = scrape(registry)
    tcp = fams["tcpchurn_tcp_sockets"]
    for side in ("client", "server"):
        got = {s.labels["state"]: s.value for s in tcp.samples if s.labels["side"] == side}
        assert got == {k: float(v) for k, v in sample[side]["tcp"]["states"].items()}
    entries = fams["tcpchurn_conntrack_entries"]
    assert {s.labels["side"]: s.value for s in entries.samples} == {
        side: float(sample[side]["conntrack"]["count"]) for side in ("client", "server")
    }


def test_counters_are_counters_named_total() -> None:
    registry = prometheus.make_registry()
    prometheus.KernelMetrics(registry, "server").update(sample_of("conntrack_full_server"))
    text = generate_latest(registry).decode()
    fams = scrape(registry)
    stat = sample_of("conntrack_full_server")["conntrack"]["stat"]
    events = fams["tcpchurn_conntrack_events"]
    assert events.type == "counter"
    assert {s.labels["event"]: s.value for s in events.samples} == {
        k: float(v) for k, v in stat.items()
    }
    assert (
        f'tcpchurn_conntrack_events_total{{event="drop",side="server"}} {float(stat["drop"])}'
        in (text)
    )
    for name, fam in fams.items():
        assert fam.documentation, name
        assert name.startswith("tcpchurn_")


def test_null_values_are_left_out_not_zero() -> None:
    registry = prometheus.make_registry()
    sample = sample_of("server_with_listener") | {
        "conntrack": {"loaded": False, "count": None, "max": None}
    }
    prometheus.KernelMetrics(registry, "server").update(sample)
    fams = scrape(registry)
    assert "tcpchurn_conntrack_entries" not in fams
    assert "tcpchurn_conntrack_max" not in fams
    assert "tcpchurn_tcp_time_wait" in fams


def test_update_replaces_the_previous_sample() -> None:
    registry = prometheus.make_registry()
    metrics = prometheus.KernelMetrics(registry, "server")
    metrics.update(sample_of("server_with_listener"))
    metrics.update(sample_of("conntrack_full_server"))
    fams = scrape(registry)
    tw = by_labels(fams["tcpchurn_tcp_time_wait"], side="server")
    assert list(tw.values()) == [float(sample_of("conntrack_full_server")["sockstat"]["tw"])]


def test_listen_and_destination_labels() -> None:
    registry = prometheus.make_registry()
    sample = {"client": sample_of("client_with_destinations")}
    prometheus.KernelMetrics(registry, "client").update(sample["client"])
    fams = scrape(registry)
    dest = sample["client"]["destinations"][0]
    got = by_labels(fams["tcpchurn_destination_sockets"], remote=dest["remote"])
    assert list(got.values()) == [float(dest["sockets"])]
    rng = by_labels(fams["tcpchurn_destination_port_range"], remote=dest["remote"])
    assert list(rng.values()) == [float(dest["port_range"])]
    server = sample_of("server_with_listener")
    prometheus.KernelMetrics(registry, "server").update(server)
    fams = scrape(registry)
    q = server["listen"][0]
    got = by_labels(fams["tcpchurn_listen_backlog"], local=q["local"], side="server")
    assert list(got.values()) == [float(q["backlog"])]
    got = by_labels(fams["tcpchurn_listen_queue"], local=q["local"], side="server")
    assert list(got.values()) == [float(q["queue"])]


def test_server_on_loopback_serves_and_stops() -> None:
    registry = prometheus.make_registry()
    prometheus.KernelMetrics(registry, "host").update(sample_of("server_with_listener"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = prometheus.start_server(registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        stop()
    fams = {f.name for f in text_string_to_metric_families(text)}
    assert "tcpchurn_tcp_sockets" in fams
    with socket.socket() as s:  # nobody listens there any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our scrape's TIME_WAIT
        s.bind(("127.0.0.1", port))
        s.listen()
