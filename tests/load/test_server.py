"""The built-in server: what it answers, when it closes, and its accept queue."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tcpchurn.errors import BadValue, UsageError
from tcpchurn.server import ServerConfig, spawn
from tests.load.nginx_helper import free_port


def exchange(port: int, request: bytes, sock: socket.socket | None = None) -> bytes:
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    if not request.startswith(b"HEAD"):
        while len(body) < length:
            body += s.recv(65536)
    if sock is None:
        s.close()
    return head + b"\r\n\r\n" + body


@pytest.fixture
def server_close() -> Iterator[int]:
    with spawn(ServerConfig(close="server", response_bytes=1000)) as srv:
        yield srv.port


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"GET /any/path?x=1 HTTP/1.0",
                                          b"POST /form HTTP/1.1"])
def test_any_method_and_path_gets_200_and_n_bytes(server_close: int, request_line: bytes) -> None:
    resp = exchange(server_close, request_line + b"\r\nHost: x\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n")
    assert resp.endswith(b"\r\n\r\n" + b"x" * 1000)


def test_head_gets_no_body(server_close: int) -> None:
    resp = exchange(server_close, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Content-Length: 1000" in resp and resp.endswith(b"\r\n\r\n")


def test_close_server_sends_fin_after_the_response(server_close: int) -> None:
    s = socket.create_connection(("127.0.0.1", server_close), timeout=5)
    exchange(server_close, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", s)
    assert s.recv(100) == b""  # EOF: the server closed first
    s.close()


def test_close_client_keeps_the_connection_for_more_requests() -> None:
    with spawn(ServerConfig(close="client")) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        for _ in range(3):
            resp = exchange(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            s)
            assert resp.endswith(b"\r\n\r\nxx") and b"Connection: close" not in resp
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):  # still open: waiting for the client to close
            s.recv(100)
        s.close()


def test_silent_bare_tcp_client_is_closed_by_a_server_close_server() -> None:
    with spawn(ServerConfig(close="server", idle_close_ms=100)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 >= 0.09
        s.close()


def listen_queue(port: int) -> tuple[int, int]:
    out = subprocess.run(["ss", "-Hltn", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[1]), int(out[2])  # Recv-Q (queued), Send-Q (backlog)


def test_accept_delay_with_a_tiny_backlog_fills_the_accept_queue() -> None:
    cfg = ServerConfig(close="server", backlog=2, accept_delay_ms=5000, port=free_port())
    with spawn(cfg) as srv:
        # The server accepts one connection, then sleeps accept_delay: let it take this
        # one first, so that nothing below waits on its timing (on a busy CI machine it
        # reached accept() only after the clients' SYN retransmissions: 2, not 3).
        clients = [socket.create_connection(("127.0.0.1", srv.port), timeout=5)]
        deadline = time.monotonic() + 10
        while listen_queue(srv.port)[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            assert listen_queue(srv.port)[0] == 0, "the server never accepted"
            for _ in range(7):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", srv.port))
                clients.append(c)
            # loopback completes handshakes in softirq, with no retransmission needed
            deadline = time.monotonic() + 2
            while listen_queue(srv.port)[0] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            # the queue holds backlog + 1 (sk_acceptq_is_full uses ">"), the rest wait
            # in SYN_SENT for retransmissions: an accept-queue overflow
            assert listen_queue(srv.port) == (3, 2)
        finally:
            for c in clients:
                c.close()


def test_bad_config_and_taken_port() -> None:
    with pytest.raises(BadValue):
        ServerConfig(port=70000).validate()
    with pytest.raises(BadValue):
        ServerConfig(host="localhost").validate()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        with pytest.raises(UsageError) as info:
            spawn(ServerConfig(port=holder.getsockname()[1]))
        assert "cannot listen" in str(info.value)
    finally:
        holder.close()


def test_cli_help_teaches_and_bad_values_get_one_line() -> None:
    run = [sys.executable, "-m", "tcpchurn", "serve"]
    helptext = subprocess.run([*run, "--help"], capture_output=True, text=True).stdout
    for words in ("TIME_WAIT", "accept queue", "ListenOverflows", "somaxconn"):
        assert words in helptext
    bad = subprocess.run([*run, "--port", "70000"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "70000" in bad.stderr


def test_spawned_server_dies_with_its_parent() -> None:
    script = (
        "import os, signal\n"
        "from tcpchurn.server import ServerConfig, spawn\n"
        "srv = spawn(ServerConfig())\n"
        "print(srv.proc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60).stdout
    pid = int(out.split()[0])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):  # never leave it behind, even when failing
        os.kill(pid, 9)
        pytest.fail(f"server {pid} outlived its parent")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
