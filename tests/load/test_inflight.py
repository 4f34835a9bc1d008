"""``--max-inflight``: at the cap, due connections wait for one to end and start late;
one that waited longer than ``max(timeout, 1 s)`` is skipped (engine.py, ``_Span``).
Both paths (the ``engine`` fixture), against a loopback server that holds connections."""

from __future__ import annotations

import itertools
import socket
import time

from tests.load.test_pump import RESPONSE, cfg_for, serve, totals_of


def test_at_the_cap_due_connections_wait_and_start_late(engine: str) -> None:
    spans: list[tuple[float, float]] = []

    def handle(conn: socket.socket, n: int) -> None:
        accepted = time.monotonic()
        conn.recv(4096)
        if n < 3:
            time.sleep(0.04)  # two schedule steps: the next ones are due meanwhile
        conn.sendall(RESPONSE)
        spans.append((accepted, time.monotonic()))
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port, rate=50.0, duration=0.5, max_inflight=1))
    conns = js["connections"]
    assert conns == {"attempted": 25, "ok": 25, "failed": 0,  # type: ignore[comparison-overlap]
                     "late": conns["late"], "skipped": 0,  # type: ignore[index]
                     "taken_over": 0}
    assert conns["late"] >= 3  # type: ignore[index]
    spans.sort()
    # never two at once: each was accepted after the one before it had answered
    assert all(later[0] > earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_connection_that_waits_too_long_is_skipped(engine: str) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        conn.recv(4096)
        time.sleep(2.5)  # never answers in time: each holds the only slot for 1.3 s
        conn.close()

    for port in serve(handle):
        cfg = cfg_for(port, rate=4.0, duration=2.0, max_inflight=1).replace(timeout=1.3)
        js = totals_of(cfg)
    # due at 0, 0.25 .. 1.75: #0 holds the slot 0-1.3 s, #1 (due 0.25, 1.05 s late) 1.3-
    # 2.6 s; #2 is skipped at 1.8 s (1.3 s late), the rest when the run ends (2.05 s)
    conns = js["connections"]
    assert (conns["attempted"], conns["failed"], conns["skipped"]) == (  # type: ignore[index]
        2, 2, 6)
    assert js["errors"] == {"RESPONSE_TIMEOUT": 2}
