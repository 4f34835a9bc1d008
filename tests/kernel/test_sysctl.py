"""sysctl.py: the table, value parsing, absent sysctls, and the real kernel."""

from __future__ import annotations

import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import (
    NO_CONNTRACK,
    SYSCTLS,
    Kind,
    parse_sysctls,
    parse_value,
    read_sysctls,
    spec,
)
from tests.conftest import sh

FIXTURES = Path(__file__).parent.parent / "fixtures" / "proc"


def test_table_rows_are_unique_and_complete() -> None:
    names = [row.name for row in SYSCTLS]
    assert len(names) == len(set(names))
    shorts = [row.short for row in SYSCTLS]
    assert len(shorts) == len(set(shorts))
    for row in SYSCTLS:
        assert row.meaning and row.scope in ("netns", "global", "netns-readonly")
        assert row.rel == "sys/" + row.name.replace(".", "/")
    # every sysctl of KERNEL.md section 7 and the limits of sections 0-2
    for needed in (
        "tcp_tw_recycle", "tcp_tw_reuse", "tcp_tw_reuse_delay", "tcp_max_tw_buckets",
        "ip_local_port_range", "ip_local_reserved_ports", "tcp_timestamps",
        "tcp_fin_timeout", "tcp_orphan_retries", "tcp_rfc1337", "tcp_max_orphans",
        "tcp_max_syn_backlog", "tcp_syncookies", "tcp_abort_on_overflow",
        "tcp_syn_retries", "tcp_synack_retries", "tcp_mem", "tcp_rmem", "tcp_wmem",
        "somaxconn", "netdev_max_backlog", "nf_conntrack_max", "nf_conntrack_buckets",
        "nf_conntrack_tcp_timeout_time_wait", "nf_conntrack_tcp_timeout_close",
        "nf_conntrack_tcp_loose", "file-max", "nr_open", "tcp_ehash_entries",
        "tcp_child_ehash_entries",
    ):
        assert spec(needed).short == needed


def test_unknown_name_is_named() -> None:
    with pytest.raises(KeyError, match="tcp_nonsense"):
        spec("net.ipv4.tcp_nonsense")


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", "60\n", 60),
        ("int", "-262144\n", -262144),
        ("ints", "32768\t60999\n", (32768, 60999)),
        ("ints", "287898\t383867\t575796\n", (287898, 383867, 575796)),
        ("str", "\n", ""),
        ("str", "8080,9000-9010\n", "8080,9000-9010"),
    ],
)
def test_parse_value(kind: Kind, text: str, expected: object) -> None:
    assert parse_value(kind, text, "/proc/sys/x") == expected


@pytest.mark.parametrize(
    ("kind", "text"),
    [("int", "sixty\n"), ("int", "1 2\n"), ("int", "\n"), ("ints", "\n"), ("ints", "1 x\n")],
)
def test_parse_value_malformed(kind: Kind, text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_value(kind, text, "/proc/sys/net/ipv4/x")
    assert info.value.path == "/proc/sys/net/ipv4/x" and info.value.lineno == 1


def test_absent_reasons_for_older_kernel_without_conntrack() -> None:
    # A 6.6-like kernel without nf_conntrack: no tcp_tw_reuse_delay, no conntrack rows.
    files = {row.rel: "1\n" for row in SYSCTLS if row.kind == "int"}
    for name in ("tcp_tw_reuse_delay", "tcp_tw_recycle"):
        files.pop(spec(name).rel)
    for row in SYSCTLS:
        if row.name.startswith("net.netfilter."):
            files.pop(row.rel, None)
    snap = parse_sysctls(files)
    assert snap.get("tcp_tw_reuse") == 1
    assert snap.get("tcp_tw_reuse_delay") is None
    assert "6.14" in (snap.entry("tcp_tw_reuse_delay").absent_reason or "")
    assert snap.entry("net.ipv4.tcp_tw_recycle").absent_reason == (
        "removed in Linux 4.12 (commit 4396e46187ca)"
    )
    ct = snap.entry("nf_conntrack_max")
    assert ct.value is None and ct.absent_reason == NO_CONNTRACK and not ct.present
    assert snap.to_json()["net.netfilter.nf_conntrack_max"] is None
    # "ints" rows were left out of `files`: absent, with the generic reason
    assert snap.entry("tcp_mem").absent_reason == "not present on this kernel"


def test_fixture_6_18_snapshot_and_json() -> None:
    snap = read_sysctls(Procfs.fixture(str(FIXTURES / "linux-6.18")))
    assert snap.get("net.ipv4.ip_local_port_range") == (32768, 60999)
    assert snap.get("tcp_max_tw_buckets") == 131072
    assert snap.get("somaxconn") == 4096
    assert snap.get("ip_local_reserved_ports") == ""
    assert snap.get("tcp_tw_recycle") is None
    as_json = snap.to_json()
    tcp_mem = snap.get("tcp_mem")
    assert isinstance(tcp_mem, tuple) and as_json["net.ipv4.tcp_mem"] == list(tcp_mem)
    assert list(as_json) == [row.name for row in SYSCTLS]
    assert pickle.loads(pickle.dumps(snap)) == snap


@pytest.mark.root
def test_real_kernel_equals_sysctl_n(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", "net.ipv4.tcp_fin_timeout=31", netns=ns)
    with Procfs(netns=ns) as p:
        snap = read_sysctls(p)
    for e in snap.entries:
        run = subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-n", e.name], capture_output=True, text=True
        )
        if run.returncode != 0 and e.scope == "global":
            # absent inside a child netns: the reader took the host's global value
            assert e.value is not None and e.absent_reason is None
            run = subprocess.run(["sysctl", "-n", e.name], capture_output=True, text=True)
        if run.returncode != 0:
            assert e.value is None and e.absent_reason, e.name
            continue
        out = run.stdout.split()
        value = e.value
        expected: object = tuple(int(x) for x in out) if isinstance(value, tuple) else (
            int(out[0]) if isinstance(value, int) else " ".join(out)
        )
        assert value == expected, e.name
    assert snap.get("tcp_fin_timeout") == 31
