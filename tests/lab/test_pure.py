"""The lab's pure parts: parsers (captured fixtures), arithmetic, configs, scenario data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpchurn.diagnose.fixes import Fix, FixContext, fix_for
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.errors import BadValue, ParseError
from tcpchurn.lab.client import load_argv, with_rlimit
from tcpchurn.lab.faults import sysctl_rel
from tcpchurn.lab.fixes import PassContext, fix_settings, settings_from_fix
from tcpchurn.lab.runner import LabOptions, effective
from tcpchurn.lab.sampler import Sample, count_tcp_lines, load_start, stall_time
from tcpchurn.lab.scenarios import SCENARIOS, Load, Settings, by_name, merge
from tcpchurn.lab.servers import ServerSpec, apache_conf, nginx_conf, server_argv
from tcpchurn.lab.topology import Topology
from tcpchurn.lab.tuples import parse_nf_conntrack, tuple_stats

FIXTURES = Path(__file__).parent / "fixtures"
LIMIT_IDS = {
    "conntrack_full", "ephemeral_ports", "bind_port_conflict", "tw_buckets", "accept_queue",
    "syn_queue", "orphans", "tcp_mem", "fd_process", "fd_system", "netdev_backlog",
    "generator_saturated", "server_refused", "server_slow", "unreachable",
}


def test_nf_conntrack_fixture_parses_original_direction() -> None:
    # Captured on 6.18 in a lab server namespace: 4 IPv4 connect()s (3 without bind,
    # 1 bound to 198.18.0.11), 1 IPv6, plus the readiness probe; nginx closed first.
    entries = parse_nf_conntrack((FIXTURES / "nf_conntrack.txt").read_text())
    assert len(entries) == 6
    assert entries[0] == ("TIME_WAIT", ("198.18.0.1", 45518, "198.18.0.2", 80))
    stats = tuple_stats(entries)
    assert stats.entries == stats.distinct_tuples == 6
    assert stats.ports_per_source == {
        "198.18.0.1": 4, "198.18.0.11": 1, "fd00:0198:0018:0000:0000:0000:0000:0001": 1
    }
    # connect() without bind takes even ports; bind(addr, 0) takes odd ones.
    assert (stats.even_ports, stats.odd_ports) == (5, 1)
    assert stats.states == {"TIME_WAIT": 6}


def test_reused_tuple_counts_once_and_other_ports_are_ignored() -> None:
    line = ("ipv4 2 tcp 6 100 TIME_WAIT src=198.18.0.1 dst=198.18.0.2 sport={} dport={} "
            "src=198.18.0.2 dst=198.18.0.1 sport={} dport={} [ASSURED] mark=0 use=1")
    text = "\n".join([line.format(40000, 80, 80, 40000)] * 2
                     + [line.format(40002, 8080, 8080, 40002)]
                     + ["ipv4 2 udp 17 20 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 mark=0"])
    stats = tuple_stats(parse_nf_conntrack(text))
    assert (stats.entries, stats.distinct_tuples) == (2, 1)


def test_malformed_conntrack_line_names_the_line() -> None:
    with pytest.raises(ParseError, match="nf_conntrack:1"):
        parse_nf_conntrack("ipv4 2 tcp 6 100 TIME_WAIT src=198.18.0.1 mark=0\n")


def test_seed_view_counts_v4_mapped_lines_in_tcp6_only() -> None:
    # The 2009 view, captured: /proc/net/tcp is empty, tcp6 holds the IPv4 clients.
    assert count_tcp_lines((FIXTURES / "tcp.txt").read_text()) == (0, 0)
    assert count_tcp_lines((FIXTURES / "tcp6.txt").read_text()) == (6, 4)


def _s(t: float, count: int, opens: int, mx: int = 100) -> Sample:
    return Sample(t=t, conntrack_count=count, conntrack_max=mx, tw=None, passive_opens=opens,
                  tcp_lines=None, tcp6_lines=None, tcp6_v4mapped=None)


def test_stall_time_counts_from_the_first_accepted_connection() -> None:
    samples = [_s(0.0, 1, 10), _s(0.25, 1, 10), _s(0.5, 20, 40), _s(0.75, 60, 80),
               _s(1.0, 99, 120), _s(1.25, 100, 120)]
    assert load_start(samples) == 0.25
    assert stall_time(samples) == 0.75  # 99 % of max at t=1.0, load began at 0.25


def test_stall_time_none_when_the_table_never_fills_or_no_load() -> None:
    assert stall_time([_s(0.0, 1, 10), _s(0.25, 50, 60)]) is None
    assert stall_time([_s(0.0, 100, 10), _s(0.25, 100, 10)]) is None


def test_topology_names_fit_ifnamsiz() -> None:
    topo = Topology.plan("a1b2c3", 3)
    assert len(topo.client_if) <= 15 and len(topo.server_if) <= 15
    assert topo.client_ns == "tcpchurn-c-a1b2c3" and topo.server_ns == "tcpchurn-s-a1b2c3"
    assert topo.client_addrs == ("198.18.0.1", "198.18.0.11", "198.18.0.12")


def test_configs_are_dual_stack_without_keepalive() -> None:
    a = apache_conf("/x", 77)
    assert "Listen 80\n" in a and "ListenBacklog 77" in a and "KeepAlive Off" in a
    assert "mod_mpm_event.so" in a and 'PidFile "/x/apache2.pid"' in a
    n = nginx_conf("/x", 77)
    assert "listen [::]:80 ipv6only=off backlog=77;" in n and "keepalive_timeout 0;" in n
    assert "access_log off;" in n
    assert server_argv(ServerSpec("nginx"), "/x")[-2:] == ["-g", "daemon off;"]
    b = server_argv(ServerSpec("builtin", backlog=8, accept_delay_ms=5.0), "/x")
    assert b[-4:] == ["--backlog", "8", "--accept-delay", "5"]


def test_scenarios_are_complete_and_name_known_limits() -> None:
    names = [s.name for s in SCENARIOS]
    assert names[0] == "seed-2009" and "healthy" in names and len(set(names)) == len(names)
    for s in SCENARIOS:
        assert s.expected is None or s.expected in LIMIT_IDS, s.name
        assert s.load.duration <= 25, s.name
        assert (s.fix is None) == (s.expected is None), s.name
    with pytest.raises(BadValue, match="seed-2009"):
        by_name("seed-2010")


def test_diagnosis_fix_parts_go_to_the_side_and_host_only_sysctls_to_the_host() -> None:
    fix = fix_for("conntrack_full", FixContext(rate=1000, port=80, side="server",
                                               sysctls=Sysctls({"nf_conntrack_max": 4096})))
    s = settings_from_fix(fix, "server")
    assert s is not None
    assert s.host_sysctls["net.netfilter.nf_conntrack_max"] == "262144"
    assert "notrack" in s.nft_text["server"] and s.sysctls == {}
    accept = settings_from_fix(fix_for("accept_queue", FixContext(rate=400, port=80)), "server")
    assert accept is not None and accept.server == {"backlog": 4096}
    fd = settings_from_fix(fix_for("fd_process", FixContext(side="client")), "client")
    assert fd is not None and fd.load == {"rlimit_nofile": None}
    assert settings_from_fix(Fix("server_slow", "add workers"), "server") is None


def test_fix_falls_back_to_the_scenario_when_the_diagnosis_has_nothing_applicable() -> None:
    ctx = PassContext(rate=400, close="server", source_ips=1, sysctls={})
    scenario = by_name("tw-buckets")
    fix, source, _ = fix_settings(scenario, [{"limit": "server_slow", "side": "server"}], ctx)
    assert fix == scenario.fix and "scenario" in source
    fix, source, lines = fix_settings(scenario, [{"limit": "tw_buckets", "side": "server"}],
                                      ctx)
    assert fix is not None and fix.sysctls == {"server": {"net.ipv4.tcp_max_tw_buckets": "32768"}}
    assert "diagnosis" in source and any("tcp_max_tw_buckets" in x for x in lines)
    assert fix_settings(by_name("healthy"), [], ctx) == (None, "nothing", [])


def test_merge_puts_the_fix_over_the_scenario() -> None:
    base = Settings(sysctls={"client": {"a.b": "1", "c.d": "2"}}, nft={"server": ("conntrack",)},
                    host_sysctls={"net.netfilter.nf_conntrack_max": "4096"})
    fix = Settings(sysctls={"client": {"a.b": "9"}}, nft={"server": ("notrack",)},
                   server={"backlog": 4096}, load={"rlimit_nofile": 4096})
    m = merge(base, fix)
    assert m.sysctls == {"client": {"a.b": "9", "c.d": "2"}}
    assert m.nft == {"server": ("conntrack", "notrack")}
    assert m.host_sysctls == base.host_sysctls
    scenario = by_name("fd-limit")
    spec, load, addrs = effective(scenario, LabOptions(server="nginx", rate=50.0), m)
    assert (spec.kind, spec.backlog, load.rlimit_nofile, load.rate, addrs) == (
        "nginx", 4096, 4096, 50.0, 1)


def test_load_argv_runs_in_the_client_namespace_and_watches_the_server() -> None:
    topo = Topology.plan("abcdef", 2)
    argv = load_argv(topo, Load(rate=1000, duration=8, close="client"), 2, "/o")
    assert argv[:4] == ["ip", "netns", "exec", "tcpchurn-c-abcdef"]
    assert argv[argv.index("--watch-netns") + 1] == "tcpchurn-s-abcdef"
    assert argv.count("--source-ip") == 2 and "http://198.18.0.2/" in argv
    tcp = load_argv(topo, Load(mode="tcp"), 1, "/o")
    assert "198.18.0.2:80" in tcp and "--source-ip" not in tcp
    assert with_rlimit(["x"], None) == ["x"]
    assert with_rlimit(["x", "y"], 256)[-3:] == ["256", "x", "y"]


def test_sysctl_names_are_checked() -> None:
    assert sysctl_rel("net.ipv4.tcp_tw_reuse") == "net/ipv4/tcp_tw_reuse"
    with pytest.raises(BadValue):
        sysctl_rel("net..ipv4")
