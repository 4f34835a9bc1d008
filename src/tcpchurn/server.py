"""The built-in target: a tiny HTTP/1.x server that can reproduce each server-side behaviour.

Every request (any method, any path) gets ``200`` and ``response_bytes`` bytes
(``HEAD``: the head only).  The knobs are the server-side causes tcpchurn diagnoses:

* ``close="server"`` — the server closes after the response, so the *server* holds
  TIME_WAIT (like Apache answering ``ab``'s HTTP/1.0 in the 2009 report);
* ``close="client"`` — the server keeps the connection until the client closes, so the
  *client* holds TIME_WAIT and spends its ephemeral ports (KERNEL.md §B);
* ``backlog`` — passed to ``listen(2)`` (capped by ``net.core.somaxconn``);
* ``accept_delay_ms`` — sleep between ``accept()`` calls, so a small backlog overflows the
  accept queue (``ListenOverflows``/``ListenDrops``, KERNEL.md ``accept_queue``).  asyncio
  servers accept eagerly, so this mode accepts from a plain listening socket in its own
  loop instead.

A bare TCP client that sends nothing is closed per the close mode: with ``server`` after
``idle_close_ms`` without a byte (HTTP clients send their request at once), with
``client`` when it closes.

:func:`spawn` runs the server in a child process (a fresh interpreter that dies with the
parent) and reports the port it really got.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from tcpchurn.errors import BadValue, TcpchurnError, UsageError
from tcpchurn.libc import libc

ServerClose = Literal["server", "client"]

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_REQUEST_HEAD = 64 * 1024
PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


@dataclass(frozen=True)
class ServerConfig:
    """How the built-in server listens and answers (see the module docstring)."""

    host: str = "127.0.0.1"
    port: int = 0
    close: ServerClose = "server"
    backlog: int = 4096
    accept_delay_ms: float = 0.0
    response_bytes: int = 2
    idle_close_ms: float = 200.0

    def validate(self) -> ServerConfig:
        """Raise :class:`BadValue` naming the first wrong value; return ``self``."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise BadValue("--host", self.host, "give an IP address, e.g. 127.0.0.1") from None
        if not 0 <= self.port <= 65535:
            raise BadValue("--port", self.port, "give 0 (any free port) to 65535")
        if self.close not in ("server", "client"):
            raise BadValue("--close", self.close, "use server or client")
        if self.backlog < 1:
            raise BadValue("--backlog", self.backlog, "give at least 1")
        if not 0 <= self.accept_delay_ms <= 60_000:
            raise BadValue("--accept-delay", self.accept_delay_ms, "give 0 to 60000 ms")
        if not 0 <= self.response_bytes <= MAX_RESPONSE_BYTES:
            raise BadValue("--response-bytes", self.response_bytes,
                           f"give 0 to {MAX_RESPONSE_BYTES} bytes")
        if self.idle_close_ms <= 0:
            raise BadValue("--idle-close", self.idle_close_ms, "give a positive number of ms")
        return self

    @property
    def family(self) -> int:
        """``AF_INET`` or ``AF_INET6`` for :attr:`host`."""
        v6 = ipaddress.ip_address(self.host).version == 6
        return socket.AF_INET6 if v6 else socket.AF_INET


class _Responses:
    """Prebuilt responses (built once per server, not per request)."""

    def __init__(self, cfg: ServerConfig) -> None:
        conn = b"Connection: close\r\n" if cfg.close == "server" else b""
        head = (
            b"HTTP/1.1 200 OK\r\nServer: tcpchurn\r\nContent-Type: text/plain\r\n"
            + b"Content-Length: %d\r\n" % cfg.response_bytes + conn + b"\r\n"
        )
        self.head = head
        self.full = head + b"x" * cfg.response_bytes


class _HttpProtocol(asyncio.Protocol):
    """One accepted connection: answer each request head, close per the close mode."""

    __slots__ = ("buf", "idle", "idle_s", "responses", "server_closes", "transport")

    def __init__(self, responses: _Responses, server_closes: bool, idle_s: float) -> None:
        self.responses = responses
        self.server_closes = server_closes
        self.idle_s = idle_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        if self.server_closes:
            self.idle = asyncio.get_running_loop().call_later(self.idle_s, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        buf = self.buf + data if self.buf else data
        transport = self.transport
        assert transport is not None
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_REQUEST_HEAD:
                    transport.close()
                    return
                break
            head = buf[:end]
            buf = buf[end + 4:]
            skip = _content_length(head)
            if skip:
                buf = buf[skip:]  # a request body: read and dropped
            if head.startswith(b"HEAD "):
                transport.write(self.responses.head)
            else:
                transport.write(self.responses.full)
            if self.server_closes:
                # close() flushes the written response, then sends FIN: we close first
                transport.close()
                return
        self.buf = buf

    def eof_received(self) -> bool:
        return False  # the client closed: close our side too (client holds TIME_WAIT)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    value = head[i + 17:].split(b"\r\n", 1)[0].strip()
    return int(value) if value.isdigit() else 0


def _listen(cfg: ServerConfig) -> socket.socket:
    sock = socket.socket(cfg.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        # the backlog bounds the accept queue (capped by net.core.somaxconn)
        sock.listen(cfg.backlog)
    except OSError as exc:
        sock.close()
        raise BadValue(f"{cfg.host}:{cfg.port}", cfg.port,
                       f"cannot listen there ({exc.strerror}); pick another --port") from exc
    sock.setblocking(False)
    return sock


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _serve(cfg: ServerConfig, on_ready: Callable[[int], None] | None) -> None:
    loop = asyncio.get_running_loop()
    lsock = _listen(cfg)
    responses = _Responses(cfg)
    idle_s = cfg.idle_close_ms / 1000.0
    server_closes = cfg.close == "server"

    def factory() -> _HttpProtocol:
        return _HttpProtocol(responses, server_closes, idle_s)

    done = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _resolve, done)
        except (RuntimeError, ValueError):  # not the main thread: the caller stops us
            pass
    if cfg.accept_delay_ms <= 0:
        server = await loop.create_server(factory, sock=lsock, backlog=cfg.backlog)
        if on_ready is not None:
            on_ready(lsock.getsockname()[1])
        try:
            await done
        finally:
            server.close()
        return
    delay = cfg.accept_delay_ms / 1000.0
    if on_ready is not None:
        on_ready(lsock.getsockname()[1])

    async def accept_slowly() -> None:
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            await loop.connect_accepted_socket(factory, conn)
            await asyncio.sleep(delay)  # the queue fills meanwhile: that is the point

    task = asyncio.ensure_future(accept_slowly())
    try:
        await asyncio.wait([task, done], return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        lsock.close()


def serve(cfg: ServerConfig, on_ready: Callable[[int], None] | None = None) -> None:
    """Run the server in this thread until SIGTERM/SIGINT; ``on_ready(port)`` once listening."""
    import uvloop

    cfg.validate()
    uvloop.run(_serve(cfg, on_ready))


# -- in a child process ------------------------------------------------------------------


def _child(cfg_json: str, ready_fd: int) -> None:
    """Entry point of the spawned server (``python -c``)."""
    libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # die with the parent
    cfg = ServerConfig(**json.loads(cfg_json))

    def ready(port: int) -> None:
        os.write(ready_fd, b"%d\n" % port)
        os.close(ready_fd)

    try:
        serve(cfg, ready)
    except TcpchurnError as exc:
        os.write(ready_fd, f"E{exc}\n".encode())


_CHILD = "import sys; from tcpchurn.server import _child; _child(sys.argv[1], int(sys.argv[2]))"


class RunningServer:
    """A server in a child process: :attr:`port`, :meth:`stop`, and a context manager."""

    def __init__(self, cfg: ServerConfig, timeout: float = 30.0) -> None:
        cfg.validate()
        self.cfg = cfg
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(dataclasses.asdict(cfg)),
                 str(write_fd)],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to the parent, which stops us
            )
        finally:
            os.close(write_fd)
        try:
            line = self._read_line(read_fd, timeout)
        finally:
            os.close(read_fd)
        if not line or line.startswith("E"):
            self.stop()
            why = line[1:] if line else "it exited before listening"
            raise UsageError(f"the built-in server did not start: {why}")
        self.port = int(line)

    def _read_line(self, fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return ""
            chunk = os.read(fd, 256)
            if not chunk:
                break
            data += chunk
        return data.decode().strip()

    @property
    def url(self) -> str:
        """``http://host:port/`` of the running server."""
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(1.0)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def spawn(cfg: ServerConfig) -> RunningServer:
    """Start the server in a child process; port 0 picks a free port (see ``.port``)."""
    return RunningServer(cfg)
