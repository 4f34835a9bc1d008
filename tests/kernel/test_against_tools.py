"""Our readers against the system's own tools, in a netns whose state is frozen.

The namespace holds TIME_WAIT sockets (60 s), idle established pairs and conntrack
entries created through an nft ``ct state new counter`` rule; nothing else runs there,
so every reader and every tool must agree exactly (psutil's TestVirtualMemoryAgainstFree
idea, without tolerances).
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcpchurn.kernel.conntrack import read_conntrack
from tcpchurn.kernel.counters import GAUGES, read_counters
from tcpchurn.kernel.limits import read_process_fds, read_system_fds
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sockstat import read_sockstat
from tcpchurn.kernel.tcptable import read_proc_net_tcp
from tests.conftest import sh
from tests.kernel import churn

pytestmark = pytest.mark.root

V4_TW, V6_TW, PAIRS = 300, 120, 4


@pytest.fixture(scope="module")
def frozen() -> Iterator[tuple[str, Procfs]]:
    """One netns for the module: building the state once keeps the file fast."""
    import uuid

    ns = f"tcpchurn-t-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    held = churn.Held()
    p: Procfs | None = None
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        churn.track_new_connections(ns)
        p = Procfs(netns=ns)
        churn.server_closes_first(p, held, V4_TW)
        churn.server_closes_first(p, held, V6_TW, dual_stack=True)
        churn.established(p, held, PAIRS)
        churn.settle(p)
        yield ns, p
    finally:
        held.close()
        if p is not None:
            p.close()
        sh("ip", "netns", "del", ns, check=False)


def _count(out: str) -> int:
    return len([line for line in out.splitlines() if line.strip()])


def test_sockstat_tw_equals_ss(frozen: tuple[str, Procfs]) -> None:
    ns, p = frozen
    s = read_sockstat(p)
    assert s.tw == _count(sh("ss", "-Htan", "state", "time-wait", netns=ns))
    assert s.tw == V4_TW + V6_TW  # both families in one number (KERNEL.md section 0)
    # inuse is IPv4 only: 2 listeners + 2 * PAIRS established; TCP6 holds 1 listener
    assert s.inuse == _count(sh("ss", "-Htan4", "state", "all", "exclude", "time-wait",
                                netns=ns))
    assert s.inuse6 == _count(sh("ss", "-Htan6", "state", "all", "exclude", "time-wait",
                                 netns=ns))


def test_counters_equal_nstat(frozen: tuple[str, Procfs], tmp_path: Path) -> None:
    ns, p = frozen
    env = {**os.environ, "NSTAT_HISTORY": str(tmp_path / "nstat.history")}
    import subprocess

    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", "--json"],
                         capture_output=True, text=True, check=True, env=env).stdout
    nstat: dict[str, int] = json.loads(out)["kernel"]
    c = read_counters(p)
    compared = 0
    for group, fields in c.groups.items():
        for name, value in fields.items():
            key = group + name
            if (group, name) in GAUGES:
                continue  # nstat leaves the constants and gauges out, as we do in deltas
            assert key in nstat, key
            assert value == nstat[key], key
            compared += 1
    ours = {g + n for g, fields in c.groups.items() for n in fields}
    from_netstat_snmp = {k for k in nstat if not k.startswith(("Ip6", "Icmp6", "Udp6",
                                                               "UdpLite6"))}
    assert from_netstat_snmp <= ours  # every counter nstat knows, we read
    assert compared > 200
    assert c.get("Tcp", "ActiveOpens") == V4_TW + V6_TW + PAIRS


def test_conntrack_count_equals_conntrack_tool(frozen: tuple[str, Procfs]) -> None:
    ns, p = frozen
    ct = read_conntrack(p, ruleset=True)
    assert ct.loaded and ct.active and ct.ruleset_uses_ct is True
    assert ct.count == int(sh("conntrack", "-C", netns=ns).strip())
    assert ct.count == V4_TW + V6_TW + PAIRS
    assert ct.stat is not None and ct.stat.entries == ct.count
    assert ct.max == int(sh("sysctl", "-n", "net.netfilter.nf_conntrack_max"))
    assert ct.timeouts["time_wait"] == int(
        sh("sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_time_wait", netns=ns))


def test_conntrack_idle_without_rules(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    held = churn.Held()
    with Procfs(netns=ns) as p:
        try:
            churn.server_closes_first(p, held, 20)
            ct = read_conntrack(p, ruleset=True)
        finally:
            held.close()
    # module loaded, no rule using it: no entries (KERNEL.md 1.A)
    assert ct.loaded and ct.count == 0 and ct.ruleset_uses_ct is False and not ct.active


def test_proc_net_tcp_equals_ss(frozen: tuple[str, Procfs]) -> None:
    ns, p = frozen
    t = read_proc_net_tcp(p)
    assert t.tcp6 is not None
    assert t.tcp.states["TIME_WAIT"] == _count(
        sh("ss", "-Htan4", "state", "time-wait", netns=ns)) == V4_TW
    v6 = sh("ss", "-Htan6", "state", "time-wait", netns=ns)
    assert t.tcp6.states["TIME_WAIT"] == _count(v6) == V6_TW
    assert t.tcp6.v4mapped == v6.count("::ffff:") // 2 == V6_TW  # local and peer mapped
    assert t.tcp.lines == _count(sh("ss", "-Htan4", "state", "all", netns=ns))


def test_fds_equal_the_kernel_and_getrlimit() -> None:
    s = read_system_fds()
    assert s.max == int(sh("sysctl", "-n", "fs.file-max"))
    assert s.nr_open == int(sh("sysctl", "-n", "fs.nr_open"))
    # file-nr's first field is global and moves with every process on the machine,
    # so only its bounds are checkable here
    assert 0 < s.allocated <= s.max
    me = read_process_fds(os.getpid())
    assert me is not None
    assert (me.soft, me.hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    # both counts include the descriptor of the /proc/PID/fd directory being listed
    assert me.open == len(os.listdir(f"/proc/{os.getpid()}/fd"))
    r, w = os.pipe()
    try:
        more = read_process_fds(os.getpid())
    finally:
        os.close(r)
        os.close(w)
    assert more is not None and more.open == me.open + 2
