"""The response checks, table-driven: complete, incomplete, garbage."""

from __future__ import annotations

import pytest

from tcpchurn.load.config import parse_target
from tcpchurn.load.http import (
    CHUNKED,
    UNTIL_EOF,
    BadResponse,
    build_request,
    chunked_length,
    parse_head,
    response_complete,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    ("buf", "eof", "complete"),
    [
        (OK, False, True),
        (OK[:-1], False, False),
        (OK[:10], False, False),
        (b"HTTP/1.0 200 OK\r\n\r\nbody", False, False),  # until EOF
        (b"HTTP/1.0 200 OK\r\n\r\nbody", True, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, True),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False, True),
        (b"HTTP/1.1 100 Continue\r\n\r\n", False, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False,
         True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", False, False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", False, True),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", False, True),
        (b"HTT", False, False),
    ],
)
def test_response_complete(buf: bytes, eof: bool, complete: bool) -> None:
    assert response_complete(buf, eof) is complete


@pytest.mark.parametrize(
    "buf",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"hello",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000,
    ],
)
def test_garbage_is_bad_response(buf: bytes) -> None:
    with pytest.raises(BadResponse):
        response_complete(buf, False)


def test_parse_head_values() -> None:
    assert parse_head(OK) == (200, len(OK) - 2, 2)
    assert parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")[2] == CHUNKED  # type: ignore[index]
    assert parse_head(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n")[2] == UNTIL_EOF  # type: ignore[index]
    assert chunked_length(b"1;ext=1\r\na\r\n0\r\nTrailer: t\r\n\r\nNEXT") == 29


@pytest.mark.parametrize(("keep_alive", "header"), [(False, b"close"), (True, b"keep-alive")])
def test_request_is_built_once_with_host_and_connection(keep_alive: bool, header: bytes) -> None:
    req = build_request(parse_target("http://[::1]:8080/p?q=1"), keep_alive)
    assert req.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: [::1]:8080\r\n")
    assert b"\r\nConnection: " + header + b"\r\n\r\n" in req and req.endswith(b"\r\n\r\n")
