"""Procfs: reading our own namespace, another one, and fixtures."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.errors import NamespaceNotFound
from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh


def test_fixture_root_reads_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "sockstat").write_text("TCP: inuse 1\n")
    p = Procfs.fixture(str(tmp_path))
    assert p.read("net/sockstat") == "TCP: inuse 1\n"
    assert p.read_optional("net/absent") is None
    assert not p.is_live


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"netns": "tcpchurn-does-not-exist"}, "tcpchurn-does-not-exist"),
        ({"netns": "../etc"}, "../etc"),
        ({"pid": 999_999_999}, "999999999"),
        ({"pid": -3}, "-3"),
    ],
)
def test_unknown_namespace_names_the_value(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(NamespaceNotFound, match=needle.replace(".", r"\.")):
        Procfs(**kwargs)  # type: ignore[arg-type]


@pytest.mark.root
def test_other_namespace_sysctl_and_net_files(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    host_value = Procfs().read("sys/net/ipv4/tcp_fin_timeout")
    sh("sysctl", "-qw", "net.ipv4.tcp_fin_timeout=33", netns=ns)
    with Procfs(netns=ns) as p:
        assert p.read("sys/net/ipv4/tcp_fin_timeout").strip() == "33"
        listener = p.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            assert f":{port:04X} " in p.read("net/tcp")
            assert f":{port:04X} " not in Procfs().read("net/tcp")
        finally:
            listener.close()
    assert Procfs().read("sys/net/ipv4/tcp_fin_timeout") == host_value
