"""RemoteWatcher: an exporter's metrics rebuilt into schema §1 samples.

Without root: every recorded sample goes through the real exporter code
(report/prometheus.py) and back. With root: an exporter in one namespace, real TIME_WAIT
sockets there, scraped from a second namespace over a veth pair with lab addresses.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tcpchurn.errors import BadValue, TargetError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.report.prometheus import KernelMetrics
from tcpchurn.report.remote import RemoteWatcher, check_url
from tests.conftest import sh

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "tests" / "fixtures" / "runs"
URL = "http://198.18.0.2:9464/metrics"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Exporter:
    """The real exporter collector on a registry, served through ``fetch``."""

    def __init__(self, side: str = "host") -> None:
        self.registry = CollectorRegistry()
        self.kernel = KernelMetrics(self.registry, side)

    def fetch(self, url: str, timeout: float) -> str:
        assert url == URL and timeout == 2.0
        return generate_latest(self.registry).decode()


def _samples() -> Iterator[dict[str, Any]]:
    for run in ("seed-2009", "healthy"):
        with open(RUNS / run / "timeline.jsonl") as f:
            for line in map(json.loads, f):
                for side in ("client", "server"):
                    if line[side] is not None:
                        yield line[side]


def _exported(sample: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``sample`` that the exporter carries, in §1 shape."""
    out = {
        "tcp.states": sample["tcp"]["states"],
        "tcp.tw_v4mapped": sample["tcp"]["tw_v4mapped"],
        "sockstat": {k: v for k, v in sample["sockstat"].items() if k != "inuse6"},
        "conntrack": {k: sample["conntrack"][k] for k in ("count", "max", "buckets", "stat")},
        "listen": [{k: x[k] for k in ("local", "queue", "backlog", "family")}
                   for x in sample["listen"] or []],
        "destinations": None if not sample["destinations"] else [
            {"remote": d["remote"], "sockets": d["sockets"], "port_range": d["port_range"]}
            for d in sample["destinations"]],
        "fds.system": {k: sample["fds"]["system"][k] for k in ("allocated", "max")},
        "fds.process": None if sample["fds"]["process"] is None else {
            k: sample["fds"]["process"][k] for k in ("open", "soft")},
        "softnet": sample["softnet"],
    }
    return out


def _rebuilt(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "tcp.states": s["tcp"]["states"], "tcp.tw_v4mapped": s["tcp"]["tw_v4mapped"],
        "sockstat": {k: v for k, v in s["sockstat"].items() if k != "inuse6"},
        "conntrack": {k: s["conntrack"][k] for k in ("count", "max", "buckets", "stat")},
        "listen": s["listen"],
        "destinations": None if s["destinations"] is None else [
            {k: d[k] for k in ("remote", "sockets", "port_range")} for d in s["destinations"]],
        "fds.system": {k: s["fds"]["system"][k] for k in ("allocated", "max")},
        "fds.process": None if s["fds"]["process"] is None else {
            k: s["fds"]["process"][k] for k in ("open", "soft")},
        "softnet": s["softnet"],
    }


def test_every_recorded_sample_survives_the_round_trip() -> None:
    exporter = Exporter()
    watcher = RemoteWatcher(URL, fetch=exporter.fetch)
    n = 0
    for sample in _samples():
        exporter.kernel.update(sample)
        got = watcher.sample()
        assert _rebuilt(got) == _exported(sample), sample["t"]
        assert got["where"] == f"remote {URL}"
        assert got["sockstat"]["inuse6"] is None  # not exported: null, never missing
        n += 1
    assert n == 30 * 2 + 10


def test_times_and_deltas_between_scrapes() -> None:
    exporter = Exporter()
    clock, wall = FakeClock(), FakeClock()
    watcher = RemoteWatcher(URL, fetch=exporter.fetch, clock=clock, wall=wall)
    base = next(_samples())
    first = copy.deepcopy(base)
    first["counters"] = {"Tcp": {"ActiveOpens": 1000, "PassiveOpens": 5, "CurrEstab": 9},
                         "TcpExt": {"ListenOverflows": 7}}
    first["conntrack"]["stat"]["drop"] = 10
    exporter.kernel.update(first)
    clock.now += 0.5
    s1 = watcher.sample()
    assert (s1["t"], s1["interval"], s1["counters_delta"], s1["softnet_delta"]) == (
        0.5, None, None, None)
    assert s1["conntrack"]["stat_delta"] is None
    second = copy.deepcopy(first)
    second["counters"] = {"Tcp": {"ActiveOpens": 2500, "PassiveOpens": 3,  # 3 < 5: reset
                                  "CurrEstab": 4},  # a gauge: never in the deltas
                          "TcpExt": {"ListenOverflows": 7}}
    second["conntrack"]["stat"]["drop"] = 1510
    second["softnet"] = {"processed": base["softnet"]["processed"] + 3000, "dropped": 2,
                         "time_squeeze": 0}
    exporter.kernel.update(second)
    clock.now += 1.25
    wall.now = 1795737612.5
    s2 = watcher.sample()
    assert (s2["t"], s2["interval"], s2["time"]) == (1.75, 1.25, 1795737612.5)
    assert s2["counters"]["Tcp"]["ActiveOpens"] == 2500
    assert s2["counters_delta"] == {"Tcp": {"ActiveOpens": 1500, "PassiveOpens": 3},
                                    "TcpExt": {"ListenOverflows": 0}}
    assert s2["conntrack"]["stat_delta"]["drop"] == 1500
    assert s2["softnet_delta"] == {"processed": 3000, "dropped": 2, "time_squeeze": 0}


def test_side_is_chosen() -> None:
    exporter = Exporter("netns a")
    other = KernelMetrics(exporter.registry, "netns b")
    samples = _samples()
    a, b = next(samples), next(samples)
    b = copy.deepcopy(b)
    b["sockstat"]["tw"] = 4242
    exporter.kernel.update(a)
    other.update(b)
    assert RemoteWatcher(URL, fetch=exporter.fetch).sample()["sockstat"]["tw"] == \
        a["sockstat"]["tw"]
    assert RemoteWatcher(URL, side="netns b", fetch=exporter.fetch).sample()[
        "sockstat"]["tw"] == 4242


@pytest.mark.parametrize(("url", "want"), [
    ("http://198.18.0.2:9464", "http://198.18.0.2:9464/metrics"),
    ("http://[fd00:198:18::2]:9464/", "http://[fd00:198:18::2]:9464/metrics"),
    ("http://127.0.0.1:9464/x/metrics", "http://127.0.0.1:9464/x/metrics"),
])
def test_check_url(url: str, want: str) -> None:
    assert check_url(url) == want


@pytest.mark.parametrize("url", ["198.18.0.2:9464", "ftp://127.0.0.1/", "http://:80/",
                                 "http://127.0.0.1:port/"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(BadValue, match="--watch-remote"):
        RemoteWatcher(url)


def test_unreachable_exporter_is_a_target_error() -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nobody listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    watcher = RemoteWatcher(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
    with pytest.raises(TargetError, match=f"cannot scrape http://127.0.0.1:{port}/metrics"):
        watcher.sample()


def test_garbage_is_a_target_error() -> None:
    watcher = RemoteWatcher(URL, fetch=lambda url, timeout: "<html>not metrics</html>\n")
    with pytest.raises(TargetError, match="Prometheus text format"):
        watcher.sample()


# ------------------------------------------------------------------ real namespaces

ADDR_A, ADDR_B, PORT = "198.18.251.1", "198.18.251.2", 9464
TIME_WAITS = 300
TRAFFIC = f"""
import socket
lst = socket.create_server(("127.0.0.1", 0))
for _ in range({TIME_WAITS}):
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    c.close()   # the client closes first: it holds TIME_WAIT
    s.close()
print("127.0.0.1:%d" % lst.getsockname()[1])
"""


def _poll(fn: Callable[[], dict[str, Any] | None], tries: int = 100) -> dict[str, Any]:
    """Call ``fn`` until it returns a sample (bounded: 100 x 0.1 s)."""
    for _ in range(tries):
        try:
            got = fn()
        except TargetError:
            got = None
        if got is not None:
            return got
        time.sleep(0.1)
    raise AssertionError("the exporter never showed the expected sample")


@pytest.mark.root
def test_scrape_an_exporter_in_another_namespace(
        make_netns: Callable[[], str]) -> None:
    a, b = make_netns(), make_netns()
    # a veth pair between the two test namespaces: the host's links are not touched
    sh("ip", "-n", a, "link", "add", "tcrA", "type", "veth", "peer", "name", "tcrB",
       "netns", b)
    for ns, dev, addr in ((a, "tcrA", ADDR_A), (b, "tcrB", ADDR_B)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    exporter = subprocess.Popen(
        ["ip", "netns", "exec", a, sys.executable, "-m", "tests.report.exporter_helper",
         ADDR_A, str(PORT), "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert exporter.stdout is not None and exporter.stdout.readline() == "ready\n"
        watcher = RemoteWatcher(f"http://{ADDR_A}:{PORT}/metrics", timeout=1.0)
        with Procfs(netns=b) as in_b:  # the scraper's socket lives in namespace b
            first = _poll(lambda: in_b.call(watcher.sample))
            assert first["sockstat"]["tw"] <= 1  # at most the first scrape's own socket
            remote = sh(sys.executable, "-c", TRAFFIC, netns=a).strip()

            def traffic_seen() -> dict[str, Any] | None:
                s = in_b.call(watcher.sample)
                dests = s["destinations"] or [{}]
                # the exporter samples every 50 ms, maybe while the traffic still ran: wait
                # for a sample whose sockstat and dump both come after it
                done = (dests[0].get("remote") == remote and dests[0]["sockets"] == TIME_WAITS
                        and (s["sockstat"]["tw"] or 0) >= TIME_WAITS)
                return s if done else None

            last = _poll(traffic_seen)
        assert last["where"] == f"remote http://{ADDR_A}:{PORT}/metrics"
        # the busiest destination: the client's TIME_WAIT sockets towards the listener
        assert last["destinations"][0] == {"remote": remote, "sockets": TIME_WAITS,
                                           "states": None, "port_range": 28232}
        # The exporter closes each scrape first, so every scrape leaves a TIME_WAIT in a
        # (the 2009 report in miniature): TIME_WAIT = traffic + finished scrapes, and a
        # scrape is accepted (PassiveOpens) before it is finished; the dump comes a moment
        # after the counters, so one more scrape may have finished by then.
        scrapes = last["counters"]["Tcp"]["PassiveOpens"] - TIME_WAITS
        for tw in (last["sockstat"]["tw"], last["tcp"]["states"]["TIME_WAIT"]):
            assert TIME_WAITS <= tw <= TIME_WAITS + scrapes + 1
        # the exporter's own listener, seen from the other side of the veth
        assert f"{ADDR_A}:{PORT}" in [x["local"] for x in last["listen"]]
        # scrapes are passive opens in a; only the traffic made active ones
        active = last["counters"]["Tcp"]["ActiveOpens"]
        assert active - first["counters"]["Tcp"]["ActiveOpens"] == TIME_WAITS
        snmp = sh("cat", "/proc/net/snmp", netns=a).splitlines()
        head, values = [ln.split() for ln in snmp if ln.startswith("Tcp:")]
        assert int(values[head.index("ActiveOpens")]) == active
        assert last["counters_delta"] is not None and last["interval"] > 0
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)


@pytest.mark.root
def test_scrape_the_real_watch_exporter(make_netns: Callable[[], str]) -> None:
    # `tcpchurn watch --prometheus` serves on the namespace's own loopback only, so the
    # scraper runs in that namespace too (a Procfs thread inside it).
    ns = make_netns()
    port = 9465
    watch = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tcpchurn", "watch", "--prometheus",
         str(port), "--interval", "0.1", "--detail-every", "1", "--count", "600", "--json"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        watcher = RemoteWatcher(f"http://127.0.0.1:{port}", timeout=1.0)
        with Procfs(netns=ns) as inside:
            first = _poll(lambda: inside.call(watcher.sample))
            remote = sh(sys.executable, "-c", TRAFFIC, netns=ns).strip()

            def traffic_seen() -> dict[str, Any] | None:
                s = inside.call(watcher.sample)
                dests = s["destinations"] or [{}]
                done = dests[0].get("remote") == remote and dests[0]["sockets"] == TIME_WAITS
                return s if done else None

            last = _poll(traffic_seen)
        assert first["interval"] is None and last["interval"] > 0
        assert f"127.0.0.1:{port}" in [x["local"] for x in last["listen"]]
        assert last["sockstat"]["tw"] >= TIME_WAITS  # plus the scrapes' own TIME_WAITs
        assert last["counters"]["Tcp"]["ActiveOpens"] >= TIME_WAITS
        assert last["fds"]["system"]["max"] > 0
    finally:
        watch.terminate()
        _, err = watch.communicate(timeout=10)
    assert "Traceback" not in err
