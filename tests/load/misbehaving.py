"""Tiny TCP servers that misbehave on purpose, for the end-to-end error tests.

Run as a program so that it can live inside a test namespace::

    ip netns exec NS python -m tests.load.misbehaving MODE HOST PORT

It prints ``ready PORT`` on stdout once listening and serves until stdin closes (the test
ends it by closing the pipe; nothing is left behind); then ``peers A,B`` (the client
addresses it saw).  Modes:

``ok``       reads the request, answers a minimal HTTP/1.1 200; closes first when the
             request says ``Connection: close``, else waits for the client to close
``reset``    accepts and closes at once with SO_LINGER {on, 0}: an RST, no FIN
             (``tcp_disconnect`` path of ``tcp_close``, net/ipv4/tcp.c)
``garbage``  reads the request and answers bytes that are not HTTP, then closes
``hang``     accepts and never sends a byte; sockets stay open until the end
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
GARBAGE = b"SSH-2.0-OpenSSH_9.6 not an http server\r\n\r\n"


def _serve_one(conn: socket.socket, mode: str, held: list[socket.socket]) -> None:
    try:
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        if mode == "hang":
            held.append(conn)
            return
        conn.settimeout(10.0)
        request = conn.recv(65536)
        if not request:
            # A bare TCP client (--mode tcp) closed without a byte: answering now would
            # draw an RST from its closed socket, so just close too.
            conn.close()
            return
        conn.sendall(GARBAGE if mode == "garbage" else RESPONSE)
        if mode == "ok" and b"connection: close" not in request.lower():
            # A keep-alive request (--close client/reset): the client closes first.
            while conn.recv(65536):
                pass
        conn.close()
    except OSError:
        conn.close()


def serve(mode: str, host: str, port: int, stop: threading.Event, peers: set[str]) -> None:
    """Accept until ``stop`` is set; print ``ready PORT`` once listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held: list[socket.socket] = []
    with socket.socket(family, socket.SOCK_STREAM) as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((host, port))
        lst.listen(4096)
        lst.settimeout(0.2)
        print(f"ready {lst.getsockname()[1]}", flush=True)
        while not stop.is_set():
            try:
                conn, peer = lst.accept()
            except TimeoutError:
                continue
            peers.add(peer[0])
            if mode in ("reset", "hang"):
                _serve_one(conn, mode, held)
            else:
                threading.Thread(target=_serve_one, args=(conn, mode, held), daemon=True).start()
    for conn in held:
        conn.close()


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stop = threading.Event()
    peers: set[str] = set()
    thread = threading.Thread(target=serve, args=(mode, host, port, stop, peers))
    thread.start()
    sys.stdin.read()  # the test closes our stdin to end us
    stop.set()
    thread.join()
    print("peers " + ",".join(sorted(peers)), flush=True)


if __name__ == "__main__":
    main()
