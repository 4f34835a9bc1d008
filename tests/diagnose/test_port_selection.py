"""The kernel fact behind forecast.tuple_bound (KERNEL.md §6), checked on this kernel.

When the server closes first, the client's socket ends in CLOSED (no TIME_WAIT), and
connect() picks ports from the even half of ip_local_port_range first
(``__inet_hash_connect``: ``offset &= ~1``, odd ports only when the even ones are busy).
So one client address reaches about range/2 distinct 4-tuples to one server ip:port,
and a conntrack table or the server's TIME_WAIT table holds at most that many entries.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tcpchurn.diagnose.forecast import Plan, tuple_bound
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh

LOW, HIGH = 40000, 40199  # 200 ports


def _client_ports(procfs: Procfs, n: int, client_closes: bool) -> list[int]:
    def work() -> list[int]:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.bind(("127.0.0.1", 8080))  # outside the range: bind(0) would take one of it
        lst.listen(64)
        ports = []
        try:
            for _ in range(n):
                c = socket.create_connection(lst.getsockname(), timeout=2)
                s, _addr = lst.accept()
                ports.append(c.getsockname()[1])
                if client_closes:
                    c.close()
                    s.close()
                else:
                    s.close()  # the server closes first: TIME_WAIT on the server side
                    c.recv(1)
                    c.close()
        finally:
            lst.close()
        return ports

    return procfs.call(work)


@pytest.mark.root
def test_server_closing_first_leaves_the_client_half_the_range(
        make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", f"net.ipv4.ip_local_port_range={LOW} {HIGH}", netns=ns)
    with Procfs(netns=ns) as p:
        ports = _client_ports(p, 1000, client_closes=False)
        bound = tuple_bound(Plan(rate=1000, close="server"),
                            Sysctls({"ip_local_port_range": f"{LOW} {HIGH}"}))
        tcp = next(ln for ln in p.read("net/sockstat").splitlines() if ln.startswith("TCP:"))
        words = tcp.split()
        tw = int(words[words.index("tw") + 1])
    assert all(port % 2 == 0 for port in ports)  # even ports only
    # 1,000 connections over exactly the 100 even ports: 100 distinct 4-tuples, the bound
    assert len(set(ports)) == bound == 100
    # and the server's TIME_WAIT table holds one socket per 4-tuple, not one per connection:
    # a new SYN on a 4-tuple in TIME_WAIT takes that socket over (tcp_timewait_state_process)
    assert 0 < tw <= bound


@pytest.mark.root
def test_client_closing_first_walks_the_whole_range(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", f"net.ipv4.ip_local_port_range={LOW} {HIGH}", netns=ns)
    sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0", netns=ns)
    with Procfs(netns=ns) as p:
        ports = _client_ports(p, 200, client_closes=True)  # each port then in TIME_WAIT
    assert len(set(ports)) == 200 == tuple_bound(
        Plan(rate=1, close="client"), Sysctls({"ip_local_port_range": f"{LOW} {HIGH}"}))
