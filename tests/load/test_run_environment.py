"""The environment block of summary.json, from captured /proc files and the live host."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.environment import route_source, take_environment
from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "linux-6.18"


def test_sysctls_come_from_the_procfs_given() -> None:
    env = take_environment(Procfs.fixture(str(FIXTURE)), source_ips=["198.18.0.1"])
    captured = (FIXTURE / "sys/net/netfilter/nf_conntrack_max").read_text().strip()
    assert env["sysctls"]["net.netfilter.nf_conntrack_max"] == int(captured)
    assert env["sysctls"]["net.ipv4.tcp_tw_recycle"] is None  # removed in 4.12
    assert env["conntrack_loaded"] is True
    assert env["source_addresses"] == ["198.18.0.1"]


def test_live_host_values() -> None:
    env = take_environment(Procfs(), target=("127.0.0.1", 80, socket.AF_INET))
    assert env["kernel"] == os.uname().release
    assert env["cpus"] == os.cpu_count()
    assert env["rlimit_nofile"] == list(resource.getrlimit(resource.RLIMIT_NOFILE))
    assert env["source_addresses"] == ["127.0.0.1"]


def test_route_source_of_loopback_v6() -> None:
    assert route_source("::1", 80, socket.AF_INET6) == "::1"


@pytest.mark.root
def test_route_source_is_none_without_a_route(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    with Procfs(netns=ns) as procfs:
        # Only lo is up in a fresh namespace: no route to the lab range (ENETUNREACH).
        assert procfs.call(lambda: route_source("198.18.0.2", 80, socket.AF_INET)) is None
        sh("ip", "addr", "add", "198.18.0.1/24", "dev", "lo", netns=ns)
        assert procfs.call(lambda: route_source("198.18.0.2", 80, socket.AF_INET)) == (
            "198.18.0.1"
        )
