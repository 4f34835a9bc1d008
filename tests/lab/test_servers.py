"""The lab's topology and real servers: apache2, nginx and the built-in one, in namespaces."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tcpchurn.kernel.procfs import Procfs
from tcpchurn.lab.journal import read_proc
from tcpchurn.lab.runner import journaled
from tcpchurn.lab.sampler import count_tcp_lines
from tcpchurn.lab.servers import ServerSpec, start_server
from tcpchurn.lab.topology import Topology, build, new_lab_id, wait_connectable
from tests.lab.hoststate import HostState

pytestmark = [pytest.mark.root, pytest.mark.lab]


def _get(host: str, family: socket.AddressFamily) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect((host, 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # the server closes first (no keep-alive)
            data += chunk
    return data


@pytest.mark.parametrize("kind", ["apache", "nginx", "builtin"])
def test_server_answers_v4_and_v6_and_the_host_is_restored(
    kind: str, tmp_path: Path, host_unchanged: HostState
) -> None:
    lines: list[str] = []
    with journaled(lines.append) as journal:
        topo = Topology.plan(new_lab_id(), 2)
        build(journal, topo)
        server = start_server(journal, topo.server_ns, ServerSpec(kind=kind, backlog=77))
        try:
            wait_connectable(topo.client_ns, topo.server_v4, 80, check=server.check_alive)
            with Procfs(netns=topo.client_ns) as client:
                v4 = client.call(lambda: _get(topo.server_v4, socket.AF_INET))
                v6 = client.call(lambda: _get(topo.server_v6, socket.AF_INET6))
            assert v4.startswith(b"HTTP/1.") and b" 200 " in v4.split(b"\r\n")[0]
            assert v6.startswith(b"HTTP/1.") and b" 200 " in v6.split(b"\r\n")[0]
            with Procfs(netns=topo.server_ns) as srv:
                # One dual-stack listener on [::]:80, as Apache's `Listen 80` in 2009: the
                # IPv4 client's TIME_WAIT is listed in tcp6 as ::ffff:198.18.0.1 only.
                tcp6 = srv.read("net/tcp6")
                tcp = srv.read("net/tcp")
            assert count_tcp_lines(tcp) == (0, 0)
            _entries, mapped = count_tcp_lines(tcp6)
            assert mapped >= 1  # our IPv4 GET (the readiness probe closed first itself)
            assert read_proc(topo.server_ns, "sys/net/ipv6/bindv6only") == "0"
        finally:
            server.stop()
            server.copy_logs(str(tmp_path))
        assert server.proc.returncode is not None
    assert (tmp_path / "server-output.log").exists()
    assert lines[-1].startswith("restored the host (")
    assert not os.path.exists(server.root)


def test_readiness_names_the_address_when_nothing_listens(host_unchanged: HostState) -> None:
    from tcpchurn.errors import UsageError

    with journaled(lambda _: None) as journal:
        topo = Topology.plan(new_lab_id())
        build(journal, topo)
        with pytest.raises(UsageError, match=r"198\.18\.0\.2:80"):
            wait_connectable(topo.client_ns, topo.server_v4, 80, timeout=0.5)
