"""KernelSnapshot: the schema, deltas on a fake clock, fixtures and the real kernel.

The linux-6.18 fixture (tests/fixtures/proc/make_linux_6_18.py) holds 300 IPv4 +
200 IPv4-mapped TIME_WAIT, 5 established pairs, 3 listeners and 505 conntrack entries,
with the sock_diag replies of that same state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.kernel.counters import Counters
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.snapshot import KernelSnapshot, delta
from tcpchurn.kernel.softnet import Softnet
from tests.kernel import churn

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
NEW = Procfs.fixture(str(FIXTURES / "linux-6.18"))
OLD = Procfs.fixture(str(FIXTURES / "linux-old"))

SCHEMA_KEYS = {
    "t", "time", "where", "interval", "tcp", "sockstat", "conntrack", "counters_delta",
    "counters", "listen", "destinations", "fds", "softnet", "softnet_delta", "proc_net_tcp",
}
STATES = ["ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
          "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"]


class FakeClock:
    """Monotonic and wall clocks that move only when told to."""

    def __init__(self, mono: float = 100.0, wall: float = 1_795_737_600.0) -> None:
        self.mono, self.wall = mono, wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def take(procfs: Procfs, clock: FakeClock, **kw: Any) -> KernelSnapshot:
    return KernelSnapshot.take(procfs, clock=lambda: clock.mono, wall=lambda: clock.wall,
                               **kw)


def as_json(snap: KernelSnapshot, earlier: KernelSnapshot | None = None) -> Any:
    """``to_json()`` after a JSON round trip: what a consumer of the timeline reads."""
    return json.loads(json.dumps(snap.to_json(earlier)))


def test_cheap_sample_from_fixture_matches_the_schema() -> None:
    clock = FakeClock()
    snap = take(NEW, clock, t0=clock.mono - 12.0)
    j = as_json(snap)
    assert set(j) == SCHEMA_KEYS
    assert (j["t"], j["time"], j["where"], j["interval"]) == (12.0, clock.wall, snap.where,
                                                              None)
    tcp = j["tcp"]
    assert isinstance(tcp, dict) and list(tcp["states"]) == STATES
    # TIME_WAIT from sockstat, the rest from the non-TIME_WAIT sock_diag dump
    assert tcp["states"]["TIME_WAIT"] == 500
    assert tcp["states"]["ESTABLISHED"] == 10 and tcp["states"]["LISTEN"] == 3
    assert tcp["states_v4"] is None and tcp["tw_v4mapped"] is None
    assert tcp["source"] == "sock_diag"
    assert j["counters_delta"] is None and j["softnet_delta"] is None
    assert j["destinations"] is None and j["proc_net_tcp"] is None
    assert sorted(x["family"] for x in j["listen"]) == [4, 4, 6]
    ct = j["conntrack"]
    assert isinstance(ct, dict) and ct["count"] == 505 and ct["active"] is True
    assert ct["stat_delta"] is None
    assert j["fds"] == {"system": snap.system_fds.to_json(), "process": None}
    json.dumps(j)  # serialisable as is
    assert pickle.loads(pickle.dumps(snap)) == snap


def test_detail_sample_counts_every_state_by_family() -> None:
    clock = FakeClock()
    j = as_json(take(NEW, clock, detail=True, proc_net_tcp=True))
    tcp = j["tcp"]
    assert isinstance(tcp, dict)
    assert tcp["states"]["TIME_WAIT"] == 500
    assert tcp["states_v4"]["TIME_WAIT"] == 300 and tcp["states_v6"]["TIME_WAIT"] == 200
    assert tcp["tw_v4mapped"] == 200
    assert tcp["states_v4"]["LISTEN"] == 2 and tcp["states_v6"]["LISTEN"] == 1
    dests = j["destinations"]
    # the 500 TIME_WAIT are the local servers' own, on their listening ports: they hold
    # no port of their own and are left out (sockdiag.listener_ports); what remains is
    # the 5 client sockets of the established pairs, towards one listener
    assert isinstance(dests, list) and len(dests) == 1
    assert dests[0]["sockets"] == 5 and dests[0]["states"] == {"ESTABLISHED": 5}
    assert dests[0]["port_range"] == 60999 - 32768 + 1
    assert j["proc_net_tcp"] == {"tcp_lines": 312, "tcp6_lines": 201, "tcp6_v4mapped": 200}


def test_without_sock_diag_falls_back_to_sockstat() -> None:
    clock = FakeClock()
    j = as_json(take(OLD, clock))
    tcp = j["tcp"]
    assert isinstance(tcp, dict) and tcp["source"] == "sockstat"
    assert tcp["states"]["TIME_WAIT"] is None  # this old sockstat has no tw field
    assert tcp["states"]["ESTABLISHED"] is None
    assert j["listen"] is None
    assert j["conntrack"] == {  # module not loaded: every value null
        "loaded": False, "active": False, "count": None, "max": None, "buckets": None,
        "timeouts": dict.fromkeys(["syn_sent", "syn_recv", "established", "fin_wait",
                                   "close_wait", "last_ack", "time_wait", "close",
                                   "max_retrans", "unacknowledged"]),
        "stat": None, "stat_delta": None,
    }


def test_states_false_keeps_listeners_only() -> None:
    j = as_json(take(NEW, FakeClock(), states=False))
    tcp = j["tcp"]
    assert isinstance(tcp, dict) and tcp["source"] == "sockstat"
    assert tcp["states"]["TIME_WAIT"] == 500 and tcp["states"]["LISTEN"] == 3
    assert tcp["states"]["ESTABLISHED"] is None


def test_delta_on_a_fake_clock() -> None:
    clock = FakeClock()
    first = take(NEW, clock, t0=clock.mono)
    clock.advance(2.0)
    second = take(NEW, clock, t0=first.mono)
    # the kernel moved: 2000 more connections, 40 listen overflows, 7 softnet drops
    tcp = dict(second.counters.groups["Tcp"])
    tcp["ActiveOpens"] += 2000
    ext = dict(second.counters.groups["TcpExt"])
    ext["ListenOverflows"] += 40
    groups = {**second.counters.groups, "Tcp": tcp, "TcpExt": ext}
    assert second.softnet is not None
    second = dataclasses.replace(
        second,
        counters=Counters(groups),
        softnet=dataclasses.replace(second.softnet, dropped=second.softnet.dropped + 7),
    )
    d = delta(first, second)
    assert d.interval == 2.0
    assert d.counters.get("Tcp", "ActiveOpens") == 2000
    assert d.counters.rate("TcpExt", "ListenOverflows") == 20.0
    j = as_json(second, first)
    assert j["t"] == 2.0 and j["interval"] == 2.0
    cd = j["counters_delta"]
    assert isinstance(cd, dict) and cd["Tcp"]["ActiveOpens"] == 2000
    assert "CurrEstab" not in cd["Tcp"]  # a gauge, not a counter
    assert j["softnet_delta"] == {"processed": 0, "dropped": 7, "time_squeeze": 0}
    assert j["conntrack"]["stat_delta"]["drop"] == 0


def test_delta_refuses_two_namespaces() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="linux-old"):
        delta(take(NEW, clock), take(OLD, clock))


def test_softnet_absent_gives_null_delta() -> None:
    clock = FakeClock()
    a = take(NEW, clock)
    b = dataclasses.replace(a, softnet=None)
    assert b.to_json(a)["softnet"] is None and b.to_json(a)["softnet_delta"] is None
    assert isinstance(a.softnet, Softnet)


# ------------------------------------------------------------------ the real kernel


@pytest.fixture
def busy_netns(make_netns: Callable[[], str]) -> Iterator[tuple[str, Procfs]]:
    """A netns with 300 TIME_WAIT (100 IPv4-mapped), 3 established pairs, conntrack."""
    ns = make_netns()
    churn.track_new_connections(ns)
    held = churn.Held()
    p = Procfs(netns=ns)
    try:
        churn.server_closes_first(p, held, 200)
        churn.server_closes_first(p, held, 100, dual_stack=True)
        churn.established(p, held, 3)
        churn.settle(p)
        yield ns, p
    finally:
        held.close()
        p.close()


@pytest.mark.root
def test_real_netns_snapshot(busy_netns: tuple[str, Procfs]) -> None:
    ns, p = busy_netns
    first = KernelSnapshot.take(p, pid=os.getpid(), t0=0.0)
    snap = KernelSnapshot.take(p, pid=os.getpid(), detail=True, proc_net_tcp=True)
    j = as_json(snap, first)
    assert j["where"] == f"netns {ns}"
    tcp = j["tcp"]
    assert isinstance(tcp, dict)
    assert first.tcp_states()["TIME_WAIT"] == 300  # sockstat, per netns, v4 + v6
    assert tcp["states"]["TIME_WAIT"] == 300 and tcp["tw_v4mapped"] == 100
    assert tcp["states"]["ESTABLISHED"] == 6 and tcp["states"]["LISTEN"] == 3
    assert first.tcp_states()["ESTABLISHED"] == 6
    assert j["proc_net_tcp"] == {"tcp_lines": 200 + 6 + 2, "tcp6_lines": 101,
                                 "tcp6_v4mapped": 100}
    assert j["conntrack"]["count"] == 303 and j["conntrack"]["active"]
    assert j["counters"]["Tcp"]["ActiveOpens"] == 303
    proc = j["fds"]["process"]
    assert proc["pid"] == os.getpid() and proc["open"] > 0
    assert j["counters_delta"]["Tcp"]["ActiveOpens"] == 0


@pytest.mark.root
def test_real_snapshot_by_pid(busy_netns: tuple[str, Procfs]) -> None:
    ns, _p = busy_netns
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"])
    try:
        # `ip netns exec` enters the netns, then execs sleep in place (same pid)
        ours = os.readlink("/proc/self/ns/net")
        for _ in range(500):
            if os.readlink(f"/proc/{proc.pid}/ns/net") != ours:
                break
            time.sleep(0.01)
        with Procfs(pid=proc.pid) as by_pid:
            snap = KernelSnapshot.take(by_pid)
        assert snap.where == f"pid {proc.pid}"
        assert snap.sockstat.tw == 300
        assert snap.process_fds is not None and snap.process_fds.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_conntrack_active_from_stat_deltas_when_count_is_zero() -> None:
    # every entry expired between samples, but drops happened: this netns tracks
    clock = FakeClock()
    a = take(NEW, clock)
    assert a.conntrack.stat is not None
    idle = dataclasses.replace(a.conntrack, count=0)
    before = dataclasses.replace(a, conntrack=idle)
    columns = {**a.conntrack.stat.columns, "drop": a.conntrack.stat.columns["drop"] + 3}
    stat = dataclasses.replace(a.conntrack.stat, columns=columns)
    after = dataclasses.replace(a, conntrack=dataclasses.replace(idle, stat=stat))
    assert as_json(before)["conntrack"]["active"] is False
    assert as_json(after, before)["conntrack"]["active"] is True
    assert as_json(after, before)["conntrack"]["stat_delta"]["drop"] == 3
