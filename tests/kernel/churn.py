"""Kernel state for tests: TIME_WAIT sockets and conntrack entries inside a test netns.

Every socket is created through :meth:`Procfs.call`, so it lives in the namespace of the
Procfs for its whole life; connections go to loopback inside that namespace only.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh


@dataclass
class Held:
    """Sockets kept open by a test (listeners, established pairs); ``close()`` them."""

    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        """Close every held socket."""
        for s in self.sockets:
            s.close()
        self.sockets.clear()


def _sock(procfs: Procfs, family: int) -> socket.socket:
    return procfs.call(lambda: socket.socket(family, socket.SOCK_STREAM))


def listener(procfs: Procfs, held: Held, *, dual_stack: bool = False, backlog: int = 512
             ) -> int:
    """A listener on 127.0.0.1 (or ``[::]`` with IPV6_V6ONLY=0); returns its port."""
    if dual_stack:
        srv = _sock(procfs, socket.AF_INET6)
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind(("::", 0))
    else:
        srv = _sock(procfs, socket.AF_INET)
        srv.bind(("127.0.0.1", 0))
    srv.listen(backlog)
    held.sockets.append(srv)
    port: int = srv.getsockname()[1]
    return port


def server_closes_first(procfs: Procfs, held: Held, n: int, *, dual_stack: bool = False
                        ) -> None:
    """``n`` IPv4 connections whose server side closes first: ``n`` TIME_WAIT sockets
    on the server side (IPv4-mapped in tcp6 when ``dual_stack``), as with Apache and
    HTTP/1.0 in the 2009 report (KERNEL.md section 3)."""
    port = listener(procfs, held, dual_stack=dual_stack)
    srv = held.sockets[-1]
    for _ in range(n):
        cli = _sock(procfs, socket.AF_INET)
        cli.connect(("127.0.0.1", port))
        conn, _addr = srv.accept()
        conn.close()  # server FIN first -> server ends in TIME_WAIT
        cli.close()


def established(procfs: Procfs, held: Held, n: int) -> None:
    """``n`` established loopback connections kept open (2n ESTABLISHED sockets)."""
    port = listener(procfs, held)
    srv = held.sockets[-1]
    for _ in range(n):
        cli = _sock(procfs, socket.AF_INET)
        cli.connect(("127.0.0.1", port))
        conn, _addr = srv.accept()
        held.sockets += [cli, conn]


def settle(procfs: Procfs, timeout: float = 5.0) -> None:
    """Wait until no socket of the namespace is between states (FIN_WAIT*, LAST_ACK...).

    Not a timing assertion: loopback closes complete in softirq within microseconds; this
    only makes sure the state is frozen before two readers are compared.
    """
    transient = ("FIN_WAIT1", "FIN_WAIT2", "LAST_ACK", "CLOSING", "CLOSE_WAIT", "SYN_SENT")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh("ss", "-Htan", "state", "all", netns=procfs.netns)
        if not any(t.replace("_", "-").lower() in out.lower() for t in transient):
            return
        time.sleep(0.05)


def track_new_connections(netns: str) -> None:
    """An nft ``ct state new counter`` rule in ``netns``: conntrack creates entries.

    The table lives in the namespace and disappears with it.
    """
    sh("nft", "add", "table", "inet", "tcpchurn_t", netns=netns)
    sh("nft", "add", "chain", "inet", "tcpchurn_t", "out",
       "{ type filter hook output priority 0; }", netns=netns)
    sh("nft", "add", "rule", "inet", "tcpchurn_t", "out", "ct", "state", "new", "counter",
       netns=netns)
