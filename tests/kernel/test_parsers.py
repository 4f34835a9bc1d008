"""The /proc parsers against captured (linux-6.18) and hand-made fixtures.

The linux-6.18 fixture holds a known state (tests/fixtures/proc/make_linux_6_18.py):
300 IPv4 TIME_WAIT + 200 IPv4-mapped TIME_WAIT in tcp6, 5 established pairs (10
ESTABLISHED sockets), 3 listeners (2 IPv4, 1 dual-stack) and 505 conntrack entries.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.errors import ParseError
from tcpchurn.kernel.conntrack import (
    STAT_KEYS,
    parse_conntrack_stat,
    read_conntrack,
    ruleset_uses_conntrack,
    stat_delta,
)
from tcpchurn.kernel.counters import (
    Counters,
    counter_delta,
    counters_delta,
    parse_counters,
    read_counters,
)
from tcpchurn.kernel.limits import (
    parse_file_nr,
    parse_limits_nofile,
    read_process_fds,
    read_system_fds,
)
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sockstat import parse_sockstat, read_sockstat
from tcpchurn.kernel.softnet import parse_softnet, read_softnet, softnet_delta
from tcpchurn.kernel.tcptable import decode_address, parse_tcp_table, read_proc_net_tcp

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"
NEW = Procfs.fixture(str(FIXTURES / "linux-6.18"))
OLD = Procfs.fixture(str(FIXTURES / "linux-old"))


def variant(name: str) -> str:
    return (FIXTURES / "variants" / name).read_text()


# ---------------------------------------------------------------- sockstat


def test_sockstat_6_18() -> None:
    s = read_sockstat(NEW)
    # inuse/tw/inuse6 are this netns's (see the module docstring); orphan, alloc and mem
    # are global and were the host's at capture time
    assert s.to_json() == {"inuse": 12, "orphan": 0, "tw": 500, "alloc": 16, "mem": 221,
                           "inuse6": 1, "sockets_used": 13}
    assert pickle.loads(pickle.dumps(s)) == s


def test_sockstat_old_layout_missing_tw_and_sockstat6() -> None:
    s = read_sockstat(OLD)
    assert (s.inuse, s.tw, s.inuse6, s.sockets_used) == (7, None, None, 31)


def test_sockstat_extra_key_is_ignored() -> None:
    s = parse_sockstat(variant("sockstat-extra-key"))
    assert (s.tw, s.inuse) == (500, 12)


# ---------------------------------------------------------------- counters


def test_counters_6_18_every_field() -> None:
    c = read_counters(NEW)
    assert c.get("Tcp", "ActiveOpens") == 505 and c.get("Tcp", "PassiveOpens") == 505
    assert c.get("Tcp", "MaxConn") == -1
    assert c.get("TcpExt", "TW") == 500  # sockets that entered TIME_WAIT
    assert c.get("TcpExt", "ListenOverflows") == 0
    assert c.get("TcpExt", "NoSuchField") is None
    header = (FIXTURES / "linux-6.18/net/netstat").read_text().splitlines()[0].split()[1:]
    assert list(c.groups["TcpExt"]) == header
    assert {"TcpExt", "IpExt", "Tcp", "Ip", "Udp"} <= set(c.groups)
    assert set(c.to_json()) == {"TcpExt", "Tcp", "IpExt"}


def test_counters_old_and_new_layouts() -> None:
    old = read_counters(OLD)
    assert old.get("TcpExt", "TCPTimeWaitOverflow") == 0
    assert old.get("TcpExt", "TCPSynRetrans") is None  # not printed by that kernel
    new = parse_counters(variant("netstat-extra-field"))
    assert new["TcpExt"]["TCPFutureCounter"] == 7


def test_counters_delta_skips_gauges_and_rates() -> None:
    a = Counters({"Tcp": {"ActiveOpens": 100, "CurrEstab": 9, "MaxConn": -1},
                  "TcpExt": {"ListenOverflows": 2**32 - 2}})
    b = Counters({"Tcp": {"ActiveOpens": 1100, "CurrEstab": 4, "MaxConn": -1},
                  "TcpExt": {"ListenOverflows": 3, "New": 5}})
    d = counters_delta(a, b, interval=2.0)
    assert d.to_json() == {"Tcp": {"ActiveOpens": 1000}, "TcpExt": {"ListenOverflows": 5}}
    assert d.rate("Tcp", "ActiveOpens") == 500.0
    assert d.rate("TcpExt", "New") is None
    assert counters_delta(a, b).rate("Tcp", "ActiveOpens") is None


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        (0, 0, 0),
        (10, 15, 5),
        (2**32 - 5, 3, 8),  # 32-bit wrap
        (2**64 - 1, 4, 5),  # 64-bit wrap
        (1_000_000, 7, 7),  # reset: namespace recreated, counter restarted from 0
        (2**40, 12, 12),  # 64-bit counter far from the top: reset, not a wrap
    ],
)
def test_counter_delta_wrap_and_reset(earlier: int, later: int, expected: int) -> None:
    assert counter_delta(earlier, later) == expected


# ---------------------------------------------------------------- conntrack


def test_conntrack_6_18_with_entries() -> None:
    ct = read_conntrack(NEW)
    assert ct.loaded and ct.active
    assert (ct.count, ct.max, ct.buckets) == (505, 262144, 262144)
    assert ct.stat is not None and ct.stat.entries == 505  # taken once, not summed
    assert ct.timeouts["time_wait"] == 120 and ct.timeouts["close"] == 10
    j = ct.to_json()
    stat = j["stat"]
    assert isinstance(stat, dict) and list(stat) == list(STAT_KEYS)
    assert j["stat_delta"] is None
    assert pickle.loads(pickle.dumps(ct)) == ct


def test_conntrack_not_loaded() -> None:
    ct = read_conntrack(OLD)
    assert not ct.loaded and not ct.active
    assert ct.count is None and ct.stat is None and ct.timeouts["time_wait"] is None
    assert ct.to_json()["stat"] is None


def test_conntrack_stat_summed_by_header_name_old_layout() -> None:
    s = parse_conntrack_stat(variant("nf_conntrack-old-header"))
    assert s.entries == 0x10
    assert s.columns["searched"] == 0x300 and s.columns["insert"] == 0x23
    assert s.columns["drop"] == 5 and s.columns["early_drop"] == 1
    assert "new" not in s.columns  # always 0: dropped
    j = s.to_json()
    assert j["clashres"] is None and j["chainlength"] is None  # not printed by that kernel
    later = parse_conntrack_stat(variant("nf_conntrack-old-header").replace(
        "00000002 00000000 00000000  00000000", "00000009 00000000 00000000  00000000"))
    delta = stat_delta(s, later)
    assert delta is not None and delta["drop"] == 7 and delta["clashres"] is None


@pytest.mark.parametrize(
    ("ruleset", "tracks"),
    [
        ("table inet f { chain o { type filter hook output priority 0; "
         "ct state new counter } }", True),
        ("table ip nat { chain p { type nat hook postrouting priority 100; masquerade } }",
         True),
        ("table inet r { chain o { type filter hook output priority raw; "
         "tcp dport 80 notrack } }", False),
        ("", False),
    ],
)
def test_ruleset_uses_conntrack(ruleset: str, tracks: bool) -> None:
    assert ruleset_uses_conntrack(ruleset) is tracks


# ---------------------------------------------------------------- fds


def test_file_nr_and_limits() -> None:
    s = read_system_fds(NEW)
    assert s.max == 2466170 and s.nr_open == 1048576 and s.allocated > 0
    assert read_system_fds(OLD).to_json() == {"allocated": 900, "max": 100000,
                                              "nr_open": 1048576}
    text = (FIXTURES / "linux-6.18/self/limits").read_text()
    assert parse_limits_nofile(text) == (20000, 20000)
    assert parse_limits_nofile("Max open files  unlimited  unlimited  files\n") == (None, None)


def test_process_fds_from_a_fixture_tree(tmp_path: Path) -> None:
    (tmp_path / "4242" / "fd").mkdir(parents=True)
    for n in range(7):
        (tmp_path / "4242" / "fd" / str(n)).write_text("")
    limits = (FIXTURES / "linux-6.18/self/limits").read_text()
    (tmp_path / "4242" / "limits").write_text(limits)
    p = read_process_fds(4242, Procfs.fixture(str(tmp_path)))
    assert p is not None and p.to_json() == {"pid": 4242, "open": 7, "soft": 20000,
                                             "hard": 20000}
    assert read_process_fds(4243, Procfs.fixture(str(tmp_path))) is None  # vanished pid


def test_process_fds_of_ourselves() -> None:
    import resource

    before = read_process_fds(os.getpid())
    r, w = os.pipe()
    try:
        after = read_process_fds(os.getpid())
    finally:
        os.close(r)
        os.close(w)
    assert before is not None and after is not None
    assert after.open == before.open + 2
    assert (after.soft, after.hard) == resource.getrlimit(resource.RLIMIT_NOFILE)


# ---------------------------------------------------------------- softnet


def test_softnet_layouts() -> None:
    new = read_softnet(NEW)
    assert new is not None and new.cpus == 2
    assert new.processed == 0x7F0D45 + 0x807750 and new.dropped == 0
    old = read_softnet(OLD)
    assert old is not None
    assert (old.processed, old.dropped, old.time_squeeze) == (0xA000 + 0xB000, 4, 2)
    assert (old.received_rps, old.flow_limit_count) == (11, 1)
    nine = parse_softnet(variant("softnet_stat-9col"))
    assert (nine.processed, nine.dropped, nine.received_rps, nine.flow_limit_count) == (
        0x3000, 1, None, None)
    sixteen = parse_softnet(variant("softnet_stat-16col"))
    assert sixteen.processed == new.processed and sixteen.cpus == 2
    assert read_softnet(Procfs.fixture(str(FIXTURES / "malformed"))) is None  # no such file


def test_softnet_delta_wraps_u32() -> None:
    a = parse_softnet("fffffff0 00000001 00000000\n")
    b = parse_softnet("00000010 00000004 00000000\n")
    assert softnet_delta(a, b) == {"processed": 0x20, "dropped": 3, "time_squeeze": 0}
    assert softnet_delta(None, b) is None


# ---------------------------------------------------------------- /proc/net/tcp


def test_proc_net_tcp_6_18_the_seed_view() -> None:
    t = read_proc_net_tcp(NEW)
    assert t.tcp.lines == 312 and t.tcp.states["TIME_WAIT"] == 300
    assert t.tcp.states["ESTABLISHED"] == 10 and t.tcp.states["LISTEN"] == 2
    assert t.tcp6 is not None
    assert t.tcp6.states["TIME_WAIT"] == 200 and t.tcp6.v4mapped == 200
    assert t.to_json() == {"tcp_lines": 312, "tcp6_lines": 201, "tcp6_v4mapped": 200}


def test_proc_net_tcp_without_ipv6() -> None:
    t = read_proc_net_tcp(OLD)
    assert t.tcp6 is None and t.tcp.lines == 3
    assert t.to_json()["tcp6_lines"] is None


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("0100007F:1F90", ("127.0.0.1", 8080)),
        ("00000000:0000", ("0.0.0.0", 0)),
        ("0000000000000000FFFF00000100007F:0050", ("::ffff:127.0.0.1", 80)),
        ("00000000000000000000000001000000:0016", ("::1", 22)),
        ("00000000000000000000000000000000:0000", ("::", 0)),
    ],
)
def test_decode_address(raw: str, decoded: tuple[str, int]) -> None:
    assert decode_address(raw) == decoded


# ---------------------------------------------------------------- malformed: ParseError


def _sockstat(t: str) -> object:
    return parse_sockstat(t, path="F")


def _conntrack(t: str) -> object:
    return parse_conntrack_stat(t, "F")


MALFORMED: list[tuple[str, Callable[[str], object], int]] = [
    ("sockstat-not-int", _sockstat, 2),
    ("sockstat-no-colon", _sockstat, 2),
    ("netstat-short-values", lambda t: parse_counters(t, "F"), 2),
    ("netstat-wrong-group", lambda t: parse_counters(t, "F"), 2),
    ("snmp-no-values", lambda t: parse_counters(t, "F"), 1),
    ("nf_conntrack-short-row", _conntrack, 2),
    ("nf_conntrack-not-hex", _conntrack, 2),
    ("nf_conntrack-no-header", _conntrack, 1),
    ("softnet_stat-2col", lambda t: parse_softnet(t, "F"), 1),
    ("softnet_stat-not-hex", lambda t: parse_softnet(t, "F"), 1),
    ("tcp-bad-state", lambda t: parse_tcp_table(t, "F"), 2),
    ("tcp-short", lambda t: parse_tcp_table(t, "F"), 2),
    ("file-nr-two-fields", lambda t: parse_file_nr(t, path="F"), 1),
    ("limits-not-int", lambda t: parse_limits_nofile(t, "F"), 2),
]


@pytest.mark.parametrize(("name", "parse", "lineno"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_raises_parse_error_with_the_line(
    name: str, parse: Callable[[str], object], lineno: int
) -> None:
    text = (FIXTURES / "malformed" / name).read_text()
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert err.path == "F" and err.lineno == lineno
    assert err.line == text.splitlines()[lineno - 1]
    assert pickle.loads(pickle.dumps(err)).lineno == lineno
