"""Two network namespaces joined by a veth pair: the lab's client and server hosts.

::

    tcpchurn-c-<id>                               tcpchurn-s-<id>
      lo up                                         lo up
      tcc-<id> 198.18.0.1/24 (+ .11, .12, ...)  ---  tcs-<id> 198.18.0.2/24
               fd00:198:18::1/64 nodad                       fd00:198:18::2/64 nodad

Addresses come from 198.18.0.0/15, reserved for benchmarking (RFC 2544), and a ULA
/64, so lab traffic can never leave the machine.  Namespaces are created with
``ip netns add`` (the bind mount under ``/run/netns`` that every tool understands),
links and addresses with ``ip -n``.  pyroute2 0.9's ``NetNS`` was tried first and
dropped: in 2 of 5 runs its helper did not find a namespace created a moment before
(FileNotFoundError on /var/run/netns/NAME, or an interface lookup that came back
empty), and a netlink call landing in the wrong namespace is not a risk worth taking
for a tool that promises to leave the host untouched.  Every creation is
journaled before it happens; deleting a namespace deletes its veth end and the peer.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from tcpchurn.errors import UsageError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.lab.journal import Journal

CLIENT_V4 = "198.18.0.1"
SERVER_V4 = "198.18.0.2"
CLIENT_V6 = "fd00:198:18::1"
SERVER_V6 = "fd00:198:18::2"
EXTRA_CLIENT_BASE = 11  # 198.18.0.11, .12, ... for scenarios that want several sources


def new_lab_id() -> str:
    """Six hex digits: short enough for ``tcc-<id>`` to fit IFNAMSIZ (15 chars)."""
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Topology:
    """The names and addresses of one lab."""

    lab_id: str
    client_ns: str
    server_ns: str
    client_if: str
    server_if: str
    client_addrs: tuple[str, ...]
    server_v4: str = SERVER_V4
    server_v6: str = SERVER_V6

    @classmethod
    def plan(cls, lab_id: str, n_client_addrs: int = 1) -> Topology:
        """Names and addresses for ``lab_id`` (pure: nothing is created)."""
        if not 1 <= n_client_addrs <= 200:
            raise UsageError(f"client addresses: {n_client_addrs} is not in 1..200")
        extra = tuple(f"198.18.0.{EXTRA_CLIENT_BASE + i}" for i in range(n_client_addrs - 1))
        return cls(
            lab_id=lab_id,
            client_ns=f"tcpchurn-c-{lab_id}",
            server_ns=f"tcpchurn-s-{lab_id}",
            client_if=f"tcc-{lab_id}",
            server_if=f"tcs-{lab_id}",
            client_addrs=(CLIENT_V4, *extra),
        )


def create_netns(journal: Journal, name: str) -> None:
    """``ip netns add NAME`` with loopback up, journaled first."""
    journal.record("netns", name=name)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)


def _ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True, text=True)


def _configure(netns: str, ifname: str, v4: list[str], v6: str) -> None:
    for addr in v4:
        _ip(netns, "addr", "add", f"{addr}/24", "dev", ifname)
    # nodad: duplicate address detection would keep the address "tentative" (unusable)
    # for about a second after it is added (RFC 4862 section 5.4).
    _ip(netns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
    _ip(netns, "link", "set", ifname, "up")


def build(journal: Journal, topo: Topology) -> None:
    """Create both namespaces, the veth pair and the addresses of ``topo``."""
    create_netns(journal, topo.client_ns)
    create_netns(journal, topo.server_ns)
    _ip(topo.client_ns, "link", "add", topo.client_if, "type", "veth",
        "peer", "name", topo.server_if, "netns", topo.server_ns)
    _configure(topo.client_ns, topo.client_if, list(topo.client_addrs), CLIENT_V6)
    _configure(topo.server_ns, topo.server_if, [SERVER_V4], SERVER_V6)


def wait_connectable(
    netns: str,
    host: str,
    port: int,
    timeout: float = 10.0,
    check: Callable[[], None] | None = None,
) -> None:
    """Connect from ``netns`` to ``host:port`` until it succeeds (server readiness).

    ``check`` is called between attempts and may raise (a server that exited).
    Raises :class:`UsageError` naming the address when nothing answers in ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    with Procfs(netns=netns) as proc:
        while time.monotonic() < deadline:
            try:
                sock = proc.call(lambda: socket.create_connection((host, port), timeout=1.0))
                sock.close()
                return
            except OSError as exc:
                last = exc
                if check is not None:
                    check()
                time.sleep(0.1)
    raise UsageError(f"the lab server at {host}:{port} did not answer within {timeout:g} s: {last}")
