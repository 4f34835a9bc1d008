"""The little HTTP/1.x the load needs: one prebuilt request, and "is the response complete?".

Why not httptools here, measured on this machine for one whole nginx response (185 bytes,
head + body in one buffer): httptools 0.71 µs (parser object + one callback), this module
1.21 µs.  httptools is faster, but (1) its ``HttpResponseParser`` has no way to signal
EOF (no ``feed_eof``/``finish`` in 0.6), so a body delimited by the server's close — what
HTTP/1.0 servers send — can never complete; (2) the engine parses rarely anyway: a
response byte-identical to the last complete one is accepted without parsing (nginx's
responses change once a second, with the ``Date`` header), so either parser costs well
under 0.1 µs per connection on average.

Sans-IO: bytes in, answers out (STYLE.md rule 1).

>>> parse_head(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
(200, 38, 2)
"""

from __future__ import annotations

from tcpchurn.load.config import Target

UNTIL_EOF = -1  # no Content-Length, not chunked: the body ends when the server closes
CHUNKED = -2
MAX_HEAD = 64 * 1024


class BadResponse(Exception):
    """The server sent bytes that are not an HTTP/1.x response (name ``BAD_RESPONSE``)."""


def build_request(target: Target, keep_alive: bool, method: str = "GET") -> bytes:
    """The request every connection sends, built once.

    ``keep_alive=False`` asks the server to close first (``Connection: close``), so the
    *server* holds TIME_WAIT; with ``True`` the client decides when to close.

    >>> from tcpchurn.load.config import parse_target
    >>> build_request(parse_target("127.0.0.1:8080"), keep_alive=False).split(b"\\r\\n")[:2]
    [b'GET / HTTP/1.1', b'Host: 127.0.0.1:8080']
    """
    conn = "keep-alive" if keep_alive else "close"
    return (
        f"{method} {target.path} HTTP/1.1\r\n"
        f"Host: {target.hostname}\r\n"
        "User-Agent: tcpchurn\r\n"
        f"Connection: {conn}\r\n\r\n"
    ).encode("latin-1")


def parse_head(buf: bytes) -> tuple[int, int, int] | None:
    """``(status, head_length, body_length)`` once the head is complete, else ``None``.

    ``body_length`` is a byte count, :data:`UNTIL_EOF` or :data:`CHUNKED`.  Interim
    ``1xx`` responses are skipped.  Raises :class:`BadResponse` as soon as the bytes
    cannot be HTTP/1.x.
    """
    offset = 0
    while True:
        if not buf.startswith(b"HTTP/1."[: len(buf) - offset], offset):
            raise BadResponse(f"not HTTP/1.x: {buf[offset:offset + 40]!r}")
        end = buf.find(b"\r\n\r\n", offset)
        if end < 0:
            if len(buf) - offset > MAX_HEAD:
                raise BadResponse(f"response head longer than {MAX_HEAD} bytes")
            return None
        line_end = buf.find(b"\r\n", offset)
        parts = buf[offset:line_end].split(b" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            raise BadResponse(f"bad status line: {buf[offset:line_end][:80]!r}")
        status = int(parts[1])
        head_len = end + 4  # from the start of buf, past any interim 1xx heads
        if 100 <= status < 200:
            offset = end + 4
            continue
        if status in (204, 304):
            return status, head_len, 0
        return status, head_len, _body_length(buf[line_end:end].lower())


def _body_length(headers: bytes) -> int:
    i = headers.find(b"\r\ncontent-length:")
    if i >= 0:
        j = headers.find(b"\r\n", i + 17)
        value = headers[i + 17 : j if j >= 0 else len(headers)].strip()
        if not value.isdigit():
            raise BadResponse(f"bad Content-Length: {value[:40]!r}")
        return int(value)
    i = headers.find(b"\r\ntransfer-encoding:")
    if i >= 0:
        j = headers.find(b"\r\n", i + 2)
        if b"chunked" in headers[i : j if j >= 0 else len(headers)]:
            return CHUNKED
    return UNTIL_EOF


def chunked_length(body: bytes) -> int | None:
    """Bytes of ``body`` that make a complete chunked body (with trailers), or ``None``.

    >>> chunked_length(b"2\\r\\nok\\r\\n0\\r\\n\\r\\n")
    12
    >>> chunked_length(b"2\\r\\nok\\r\\n") is None
    True
    """
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"bad chunk size: {size_text[:20]!r}") from None
        if size == 0:
            end = body.find(b"\r\n\r\n", eol)
            if end == eol:  # no trailers: "0\r\n\r\n"
                return eol + 4
            return None if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(body):
            return None


def response_complete(buf: bytes, eof: bool) -> bool:
    """True when ``buf`` holds a whole response (given whether the server closed).

    Raises :class:`BadResponse` for garbage; the engine names an early EOF
    ``CLOSED_EARLY``.
    """
    head = parse_head(buf)
    if head is None:
        return False
    _, head_len, body = head
    if body == UNTIL_EOF:
        return eof
    if body == CHUNKED:
        return chunked_length(buf[head_len:]) is not None
    return len(buf) - head_len >= body
