"""A frozen set of TCP sockets in one namespace, and `ss` output parsed the same way.

Used by the live sock_diag tests and by ``tests/fixtures/netlink/capture.py``.  Every
socket is created inside the namespace (through ``Procfs.call``) and talks only to
loopback addresses of that namespace.  Nothing changes state after :func:`build_scene`
returns: the full accept queue drops further SYNs and ACKs (``tcp_conn_request`` /
``tcp_check_req`` on ``sk_acceptq_is_full``) and TIME_WAIT lasts 60 s.
"""

from __future__ import annotations

import collections
import socket
import time
from dataclasses import dataclass, field

from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh

# `ss` state names (misc/ss.c sstate_name) -> include/net/tcp_states.h names
SS_STATES = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "UNCONN": "CLOSE",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


@dataclass
class Scene:
    """What was built, so tests know which numbers to expect from the kernel."""

    full_port: int = 0  # 127.0.0.1, listen(8), 20 connects, never accepted
    tw_port: int = 0  # 127.0.0.2, server closes first: tw_v4 TIME_WAIT
    dual_port: int = 0  # [::] dual-stack, IPv4 clients: tw_mapped TIME_WAIT in tcp6
    est_port: int = 0  # 127.0.0.3, kept ESTABLISHED (some clients AF_INET6 v4-mapped)
    tw_v4: int = 24
    tw_mapped: int = 15
    tw_v6: int = 4  # native ::1 TIME_WAIT on the dual-stack listener
    est_v4: int = 12
    est_mapped: int = 3
    fin_wait2: int = 3  # server closes, client never does: FIN_WAIT2 / CLOSE_WAIT
    keep: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        """Close every socket the scene holds (TIME_WAIT ones are the kernel's)."""
        for s in self.keep:
            s.close()
        self.keep.clear()


def _tw_count(procfs: Procfs) -> int:
    for line in procfs.read("net/sockstat").splitlines():
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("tw") + 1])
    return 0


def build_scene(procfs: Procfs) -> Scene:
    """Create the sockets described by :class:`Scene` inside ``procfs``'s namespace."""
    scene = Scene()

    def mk(family: int = socket.AF_INET) -> socket.socket:
        s = procfs.call(lambda: socket.socket(family, socket.SOCK_STREAM))
        scene.keep.append(s)
        return s

    def listener(host: str, backlog: int, family: int = socket.AF_INET) -> socket.socket:
        s = mk(family)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, 0))
        s.listen(backlog)
        return s

    def server_closes_first(lst: socket.socket, host: str, family: int) -> None:
        c = procfs.call(lambda: socket.socket(family, socket.SOCK_STREAM))
        c.connect((host, lst.getsockname()[1]))
        s, _ = lst.accept()
        s.close()
        assert c.recv(1) == b""  # the server's FIN arrived
        c.close()

    full = listener("127.0.0.1", 8)
    scene.full_port = full.getsockname()[1]
    for _ in range(20):
        c = mk()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", scene.full_port))

    tw = listener("127.0.0.2", 64)
    scene.tw_port = tw.getsockname()[1]
    for _ in range(scene.tw_v4):
        server_closes_first(tw, "127.0.0.2", socket.AF_INET)

    dual = listener("::", 64, socket.AF_INET6)
    scene.dual_port = dual.getsockname()[1]
    for _ in range(scene.tw_mapped):
        server_closes_first(dual, "127.0.0.1", socket.AF_INET)
    for _ in range(scene.tw_v6):
        server_closes_first(dual, "::1", socket.AF_INET6)

    est = listener("127.0.0.3", 64)
    scene.est_port = est.getsockname()[1]
    for _ in range(scene.est_v4):
        mk().connect(("127.0.0.3", scene.est_port))
        scene.keep.append(est.accept()[0])
    for _ in range(scene.est_mapped):
        mk(socket.AF_INET6).connect(("::ffff:127.0.0.3", scene.est_port))
        scene.keep.append(est.accept()[0])
    for _ in range(scene.fin_wait2):
        mk().connect(("127.0.0.3", scene.est_port))
        est.accept()[0].close()  # orphaned FIN_WAIT2 (a timewait sock, substate FIN_WAIT2)

    want = scene.tw_v4 + scene.tw_mapped + scene.tw_v6
    deadline = time.monotonic() + 5.0
    while _tw_count(procfs) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # let the last handshakes of the non-blocking connects settle
    return scene


def ss_states(netns: str, *args: str) -> dict[str, int]:
    """Per-state counts from ``ss -Htan [args]`` run in ``netns``."""
    counts: collections.Counter[str] = collections.Counter()
    for line in sh("ss", "-Htan", *args, netns=netns).splitlines():
        counts[SS_STATES[line.split()[0]]] += 1
    return dict(counts)


def ss_lines(netns: str, *args: str) -> list[list[str]]:
    """``ss -Htan [args]`` in ``netns``, split into fields."""
    return [line.split() for line in sh("ss", "-Htan", *args, netns=netns).splitlines()]


def ss_listeners(netns: str) -> set[tuple[str, int, int]]:
    """(local, Recv-Q, Send-Q) of ``ss -Hltn``; ss prints a dual-stack ``[::]`` as ``*``."""
    out = set()
    for line in sh("ss", "-Hltn", netns=netns).splitlines():
        _state, recvq, sendq, local, _peer = line.split()[:5]
        if local.startswith("*:"):
            local = "[::]:" + local[2:]
        out.add((local, int(recvq), int(sendq)))
    return out


def many_time_wait(procfs: Procfs, listen_on: tuple[str, int], connect_to: str, n: int) -> None:
    """``n`` server-side TIME_WAIT sockets in ``procfs``'s namespace, built in batches.

    ``listen_on`` is ``("::", 0)`` for a dual-stack listener (IPv4 clients then leave
    v4-mapped TIME_WAIT in tcp6) or an IPv4 address.  Runs inside the namespace thread.
    """

    def build() -> None:
        family = socket.AF_INET6 if ":" in listen_on[0] else socket.AF_INET
        lst = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        lst.bind(listen_on)
        lst.listen(512)
        port = lst.getsockname()[1]
        cfam = socket.AF_INET6 if ":" in connect_to else socket.AF_INET
        try:
            done = 0
            while done < n:
                batch = min(256, n - done)
                clients = []
                for _ in range(batch):
                    c = socket.socket(cfam, socket.SOCK_STREAM)
                    c.setblocking(False)
                    c.connect_ex((connect_to, port))
                    clients.append(c)
                for _ in range(batch):
                    lst.accept()[0].close()  # the server closes first
                for c in clients:
                    c.close()
                done += batch
        finally:
            lst.close()

    procfs.call(build)
