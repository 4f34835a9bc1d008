"""One connection's life: socket, connect, request, read the response, close, record.

:class:`Connections` holds the per-connection half of the engine (engine.py runs the
schedule and the event loop and inherits these handlers): ``_start`` opens a connection
that is due, ``_event`` serves an epoll event for it, ``_finish`` closes it (by the
``--close`` mode) and records its timestamps, ``_expire`` fails what outlived
``--timeout``.  Errors are named at ONE place, :func:`error_name` (docs/schema.md §7).
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from tcpchurn.load.config import LoadConfig
from tcpchurn.load.http import BadResponse, response_complete
from tcpchurn.load.stats import LATE_S, MISSING, Recorder

if TYPE_CHECKING:
    from tcpchurn.load._pump import Export, Pump

# _pump.ACT_*: what the C path asks of a connection it hands over (_pump.c)
ACT_EVENT, ACT_FAIL, ACT_JUDGE, ACT_EXPIRE = 0, 1, 2, 3

# include/uapi/linux/in.h; socket.IP_BIND_ADDRESS_NO_PORT exists on 3.11 builds for Linux
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

EPOLLIN, EPOLLOUT, EPOLLET = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET
EPOLLERR, EPOLLHUP, EPOLLRDHUP = select.EPOLLERR, select.EPOLLHUP, select.EPOLLRDHUP
_ERRBITS = EPOLLERR | EPOLLHUP
_READABLE = EPOLLIN | EPOLLRDHUP
_CONNECTING_MASK = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
_READING_MASK = EPOLLIN | EPOLLRDHUP | EPOLLET  # the request is sent: only replies matter

SOCK_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
EINPROGRESS = errno.EINPROGRESS

#: SO_LINGER {on, 0 s}: close() sends RST and skips TIME_WAIT (socket(7), tcp_close()
#: -> tcp_disconnect when sk->sk_lingertime == 0)
LINGER_RESET = struct.pack("ii", 1, 0)

RECV_SIZE = 65536
CONNECTING, READING, DONE = 0, 1, 2


def error_name(code: int) -> str:
    """The schema §7 name of an errno: ``errno.errorcode`` or ``ERRNO_<n>``.

    >>> error_name(errno.EADDRNOTAVAIL)
    'EADDRNOTAVAIL'
    """
    return errno.errorcode.get(code, f"ERRNO_{code}")


class Conn:
    """One live connection: its socket, its times, what it has read."""

    __slots__ = ("buf", "conn_t", "done", "eof", "fd", "sched", "sock", "start", "state",
                 "ttfb")

    def __init__(self, sock: _socket.socket, fd: int, sched: float, start: float,
                 conn_t: float = MISSING, state: int = CONNECTING) -> None:
        self.sock = sock
        self.fd = fd
        self.sched = sched
        self.start = start
        self.conn_t = conn_t
        self.ttfb = MISSING
        #: when the response was complete before the server's FIN (--close server: the
        #: end of the connection's ``total``, not the FIN's arrival)
        self.done = MISSING
        self.buf = b""
        self.eof = False
        self.state = state


class Connections:
    """The per-connection handlers; :class:`tcpchurn.load.engine.Engine` sets the state."""

    cfg: LoadConfig
    rec: Recorder
    conns: dict[int, Conn]
    clock: Callable[[], float]
    start_at: float
    addr: tuple[object, ...] | str
    af: int
    sources: tuple[str, ...]
    http: bool
    close_server: bool
    close_reset: bool
    request: bytes
    _last_ok: dict[bool, bytes]
    pump: Pump | None

    # -- one connection --------------------------------------------------------------

    def _start(self, seq: int, sched: float, now: float, ep: select.epoll) -> None:
        rec = self.rec
        rec.attempted += 1
        if now - sched > LATE_S:
            rec.late += 1
        try:
            # the C type: socket.socket's Python __init__/close() cost ~1 µs per connection
            sock = _socket.socket(self.af, SOCK_STREAM_NONBLOCK)
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: no socket, no connection
            self._fail_early(exc.errno or 0, sched, now)
            return
        if self.sources:
            # bind(ip, 0) alone would pick (and hold) a port now, for *any* destination,
            # so N sockets need N distinct ports per source IP; IP_BIND_ADDRESS_NO_PORT
            # defers the choice to connect(), where the whole 4-tuple is known and ports
            # are shared across destinations (KERNEL.md §C; trio's
            # _highlevel_open_tcp_stream.py explains the same; Linux 4.2, commit
            # 90c337da1524).
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.sources[seq % len(self.sources)], 0))
            except OSError as exc:
                sock.close()
                self._fail_early(exc.errno or 0, sched, now)
                return
        rc = sock.connect_ex(self.addr)
        if rc != EINPROGRESS and rc != 0:
            sock.close()
            self._fail_early(rc, sched, now)
            return
        fd = sock.fileno()
        mask = _CONNECTING_MASK
        conn_t = MISSING
        if self.http:
            # on loopback connect() usually returns with the handshake already done (the
            # server's side ran in softirq inside the call): send now, and the only event
            # this connection raises is the response; EAGAIN means SYN_SENT (tcp_sendmsg
            # -> sk_stream_wait_connect), so wait for EPOLLOUT as usual
            try:
                sock.send(self.request)
            except BlockingIOError:
                pass
            except OSError as exc:  # ECONNREFUSED (sk_err), EPIPE
                if exc.errno != errno.ENOTCONN:
                    sock.close()
                    self._fail_early(exc.errno or 0, sched, now)
                    return
            else:
                conn_t = self.clock() - self.start_at
                mask = _READING_MASK
        try:
            ep.register(fd, mask)
        except OSError as exc:  # ENOSPC: fs.epoll.max_user_watches; ENOMEM
            sock.close()
            self._fail_early(exc.errno or 0, sched, now)
            return
        self.conns[fd] = Conn(sock, fd, sched, now, conn_t,
                               CONNECTING if conn_t < 0.0 else READING)

    def _fail_early(self, code: int, sched: float, now: float) -> None:
        self.rec.error(error_name(code), now)
        self.rec.done.extend((sched, now, MISSING, MISSING, MISSING))

    def _finish(self, c: Conn, now: float, error: str | None, reset: bool = False) -> None:
        c.state = DONE
        del self.conns[c.fd]
        sock = c.sock
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.close()  # close() also removes the fd from the epoll set
        rec = self.rec
        if error is None:
            rec.ok += 1
            rec.done.extend((c.sched, c.start, c.conn_t, c.ttfb, now if c.done < 0 else c.done))
        else:
            rec.error(error, now)
            rec.done.extend((c.sched, c.start, c.conn_t, c.ttfb, MISSING))

    def _event(self, c: Conn, ev: int, now: float) -> None:
        sock = c.sock
        if c.state == CONNECTING:
            if ev & _ERRBITS:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self._finish(c, now, error_name(code) if code else "ECONNRESET")
                return
            c.conn_t = now
            if self.http:
                try:
                    sock.send(self.request)
                except OSError as exc:
                    self._finish(c, now, error_name(exc.errno or 0))
                    return
                c.state = READING
                if not ev & _READABLE:
                    # edge-triggered: the response will raise a new IN edge; no recv now
                    return
                # else the server spoke first (a banner?) or closed: no new edge will
                # come for what is already queued, so read it now
            else:
                close = self.cfg.close
                if close != "server":
                    self._finish(c, now, None, reset=close == "reset")
                    return
                c.state = READING  # bare TCP: wait for the server's FIN
                if not ev & _READABLE:
                    return
        elif c.state != READING:
            return
        # Read what is queued.  Closing with unread bytes would send RST (tcp_close:
        # TCPAbortOnClose), and with EPOLLET no new edge comes for bytes left behind.  A
        # recv() shorter than RECV_SIZE took everything queued (tcp_recvmsg copies all it
        # has), and EPOLLRDHUP in the same event says the server's FIN is queued behind
        # it: the usual response-then-FIN costs one recv(), not a second one (or an
        # EAGAIN exception) just to see the EOF.
        data = c.buf
        failed = 0
        while True:
            try:
                chunk = sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:  # ECONNRESET: judge the bytes that came before it
                failed = exc.errno or errno.EIO
                c.eof = True
                break
            if not chunk:
                c.eof = True
                break
            if c.ttfb < 0:
                c.ttfb = now
            data = data + chunk if data else chunk
            if len(chunk) < RECV_SIZE:
                if ev & EPOLLRDHUP:
                    c.eof = True
                break
        c.buf = data
        self._judge(c, now, failed)

    def _judge(self, c: Conn, now: float, failed: int) -> None:
        """Decide on what ``c`` has read (``c.buf``, ``c.eof``; ``failed``: a recv() errno).

        The one place where a response is found complete, bad or cut short, for both
        paths: the C path (_pump.c) hands over every response that is not byte-identical
        to the last one judged complete here.
        """
        data = c.buf
        if not self.http:
            if c.eof:
                self._finish(c, now, error_name(failed) if failed else None)
            return
        eof = c.eof
        if data == self._last_ok[eof]:
            # byte-identical to the last complete response (same server, same second for
            # nginx's Date header): skip parsing, ~2 µs per connection
            complete = True
        else:
            try:
                complete = response_complete(data, eof) if data else False
            except BadResponse:
                self._finish(c, now, "BAD_RESPONSE")
                return
            if complete:
                self._last_ok[eof] = data
                if self.pump is not None:
                    self.pump.set_ok(eof, data)
                if eof and self.close_server and response_complete(data, False):
                    # complete without the FIN too (a length, not the close, frames it):
                    # the C path's sign that the response ended with its last byte
                    self._last_ok[False] = data
                    if self.pump is not None:
                        self.pump.set_ok(False, data)
        if failed:
            # a complete response followed by RST still answered the request
            self._finish(c, now, None if complete else error_name(failed))
            return
        if self.close_server:
            if c.eof:
                self._finish(c, now, None if complete else "CLOSED_EARLY")
            elif complete and c.done < 0:
                c.done = now  # what the response took; the FIN only closes (_finish)
            return
        if complete:
            self._finish(c, now, None, reset=self.close_reset)
        elif c.eof:
            self._finish(c, now, "CLOSED_EARLY")

    def _adopt(self, x: Export, now: float) -> None:
        """Take over a connection that the C path hands over, and do what it asks."""
        fd, ev, action, err, state, sched, start, conn_t, ttfb, buf, eof, done = x
        sock = _socket.socket(self.af, SOCK_STREAM_NONBLOCK, 0, fd)  # no syscall
        c = Conn(sock, fd, sched, start, conn_t, state)
        c.ttfb = ttfb
        c.buf = buf
        c.eof = eof
        c.done = done
        self.conns[fd] = c
        if action == ACT_JUDGE:
            self._judge(c, now, err)
        elif action == ACT_EVENT:
            self._event(c, ev, now)
        elif action == ACT_FAIL:
            self._finish(c, now, error_name(err))
        else:  # ACT_EXPIRE
            self._finish(c, now, "ETIMEDOUT" if state == CONNECTING else "RESPONSE_TIMEOUT")

    def _expire(self, now: float) -> None:
        """Fail connections older than ``timeout``.

        ``conns`` is a dict keyed by fd and dicts keep insertion order; a reused fd is a
        new insertion, so the first entry is always the oldest live connection and the
        timeout check is a peek, not a scan or a second queue.
        """
        limit = self.cfg.timeout
        conns = self.conns
        if self.pump is not None:
            # the C path keeps its own in start order; what it handed over here is few
            # and joined in any order: look at all of it
            for x in self.pump.expire(now, limit):
                self._adopt(x, now)
            for c in [c for c in conns.values() if now - c.start >= limit]:
                self._finish(c, now,
                             "ETIMEDOUT" if c.state == CONNECTING else "RESPONSE_TIMEOUT")
            return
        while conns:
            c = next(iter(conns.values()))
            if now - c.start < limit:
                return
            self._finish(c, now, "ETIMEDOUT" if c.state == CONNECTING else "RESPONSE_TIMEOUT")
