"""The C hot path (``_pump.c``): when it is taken, and how it hands connections over.

It serves only what is plainly fine -- bytes identical to the last response that
conn.py judged complete -- and hands everything else to conn.py with what it has read.
These tests make it hand over on purpose (a response in two parts, responses that keep
changing, a keep-alive server) against real sockets on loopback, and count how often
conn.py had to judge; and they hold the latencies it writes straight into hdrh's
histograms against ``record_value``.  The error classes run through both paths in test_engine.py and
test_errors.py (the ``engine`` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tcpchurn.errors import BadValue
from tcpchurn.load import pump
from tcpchurn.load.config import LoadConfig, parse_target
from tcpchurn.load.conn import Conn, Connections
from tcpchurn.load.engine import Engine
from tcpchurn.load.stats import (
    HIGHEST_US,
    HISTOGRAMS,
    Recorder,
    RunTotals,
    counts_and_layout,
    new_histogram,
)
from tcpchurn.server import ServerConfig, spawn
from tests.load.nginx_helper import free_port
from tests.load.runhelp import run_tcpchurn

if TYPE_CHECKING:
    from tcpchurn.load._pump import Export, Pump

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def cfg_for(port: int, rate: float = 200.0, duration: float = 0.5, **kw: object) -> LoadConfig:
    return LoadConfig(target=parse_target(f"127.0.0.1:{port}"), rate=rate, duration=duration,
                      timeout=2.0, **kw).validate()  # type: ignore[arg-type]


def test_the_c_path_is_built_and_taken_for_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pump.ENV, raising=False)
    assert pump.available(), "tcpchurn.load._pump was not built: pip install -e . with gcc"
    cfg = cfg_for(80)
    assert pump.engine_kind(cfg) == "c"
    assert Engine(cfg, lambda st: None).kind == "c"


def test_bare_tcp_takes_the_c_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pump.ENV, raising=False)
    assert pump.engine_kind(cfg_for(80, mode="tcp")) == "c"
    monkeypatch.setenv(pump.ENV, "c")
    assert pump.engine_kind(cfg_for(80, mode="tcp", close="server")) == "c"


def test_what_stays_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pump.ENV, raising=False)
    assert pump.engine_kind(cfg_for(80), clock=lambda: 0.0) == "python"  # a fake clock
    monkeypatch.setenv(pump.ENV, "python")
    assert pump.engine_kind(cfg_for(80)) == "python"
    assert pump.engine_kind(cfg_for(80, mode="tcp")) == "python"
    monkeypatch.setenv(pump.ENV, "c")
    with pytest.raises(BadValue, match="the C path cannot run: it runs on the real clock"):
        pump.engine_kind(cfg_for(80), clock=lambda: 0.0)
    monkeypatch.setenv(pump.ENV, "fast")
    with pytest.raises(BadValue, match="'fast' is not valid: use auto, c or python"):
        pump.engine_kind(cfg_for(80))


def test_the_steal_lag_of_an_a_b_measurement_is_checked_before_any_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pump.ENV, raising=False)
    monkeypatch.delenv(pump.STEAL_ENV, raising=False)
    assert pump.steal_lag_s(0.0005) == 0.0005
    monkeypatch.setenv(pump.STEAL_ENV, "inf")
    assert pump.steal_lag_s(0.0005) == float("inf")
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(pump.STEAL_ENV, bad)
        with pytest.raises(BadValue, match="TCPCHURN_STEAL_LAG_S"):
            pump.engine_kind(cfg_for(80))  # what the runner asks first


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every response conn.py judged (the C path judges none by itself)."""
    seen: list[bytes] = []
    real = Connections._judge

    def spy(self: Connections, c: Conn, now: float, failed: int) -> None:
        seen.append(c.buf)
        real(self, c, now, failed)

    monkeypatch.setattr(Connections, "_judge", spy)
    monkeypatch.delenv(pump.ENV, raising=False)
    yield seen


def serve(handle: Callable[[socket.socket, int], None]) -> Iterator[int]:
    """A loopback listener whose n-th accepted socket goes to ``handle(sock, n)``."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)
    lsock.settimeout(0.05)
    stop = threading.Event()

    def loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            threading.Thread(target=handle, args=(conn, n), daemon=True).start()
            n += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1]
    finally:
        stop.set()
        t.join()
        lsock.close()


def answers(response: bytes, close_after: float = 0.0) -> Callable[[socket.socket, int], None]:
    """A ``serve`` handler that reads the request, sends ``response`` and closes,
    ``close_after`` seconds later."""

    def handle(conn: socket.socket, n: int) -> None:
        conn.recv(4096)
        conn.sendall(response)
        if close_after:
            time.sleep(close_after)
        conn.close()

    return handle


def totals_of(cfg: LoadConfig) -> dict[str, object]:
    out: list[RunTotals] = [RunTotals()]
    Engine(cfg, out[0].add).run()
    return out[0].to_json()


def test_a_server_that_repeats_itself_is_judged_once(judged: list[bytes]) -> None:
    for port in serve(answers(RESPONSE)):
        js = totals_of(cfg_for(port))
    assert js["connections"]["ok"] == 100 and js["errors"] == {}  # type: ignore[index]
    # the first response (and perhaps its FIN read apart from it) went through conn.py;
    # the C path recognised every later one by its bytes
    assert 1 <= len(judged) <= 3
    assert all(b == RESPONSE for b in judged)


def test_a_response_in_two_parts_is_finished_by_python(judged: list[bytes]) -> None:
    head, body = RESPONSE[:-2], RESPONSE[-2:]

    def handle(conn: socket.socket, n: int) -> None:
        conn.recv(4096)
        conn.sendall(head)
        time.sleep(0.02)  # the client reads the head alone: incomplete
        conn.sendall(body)
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port, rate=100.0))
    assert js["connections"]["ok"] == 50 and js["errors"] == {}  # type: ignore[index]
    lat = js["latency_ms"]  # type: ignore[index]
    # the first byte came >= 20 ms before the end: ttfb was kept across the handover
    assert lat["total"]["p50"] - lat["ttfb"]["p50"] >= 15  # type: ignore[index]
    # a head read alone is handed over (it matches no complete response) and the body
    # comes later on a connection conn.py owns by then; a worker slowed down by a busy
    # machine may read some heads and bodies together, so not necessarily all 50
    assert sum(1 for b in judged if b == head) >= 25


def test_responses_that_keep_changing_are_each_judged(judged: list[bytes]) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        conn.recv(4096)
        body = str(n).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port))
    assert js["connections"]["ok"] == 100 and js["errors"] == {}  # type: ignore[index]
    assert len({b for b in judged}) >= 99  # nearly every one differs from the last


@pytest.mark.parametrize("close", ["client", "reset"])
def test_keep_alive_closes_are_served_in_c(judged: list[bytes], close: str) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        conn.recv(4096)
        conn.sendall(RESPONSE)
        try:
            while conn.recv(4096):  # the client closes first (FIN or RST)
                pass
        except ConnectionResetError:
            pass
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port, close=close))
    assert js["connections"]["ok"] == 100 and js["errors"] == {}  # type: ignore[index]
    assert len(judged) == 1


@pytest.fixture
def adopted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The states of the connections that the C path handed over to conn.py."""
    seen: list[int] = []
    real = Connections._adopt

    def spy(self: Connections, x: Export, now: float) -> None:
        seen.append(x[4])
        real(self, x, now)

    monkeypatch.setattr(Connections, "_adopt", spy)
    monkeypatch.delenv(pump.ENV, raising=False)
    yield seen


@pytest.mark.parametrize("close", ["client", "reset"])
def test_bare_tcp_closing_first_never_leaves_c(adopted: list[int], close: str) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        try:
            conn.recv(1)  # the client's FIN (or RST): nothing was sent
        except ConnectionResetError:
            pass
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port, mode="tcp", close=close))
    assert js["connections"]["ok"] == 100 and js["errors"] == {}  # type: ignore[index]
    assert adopted == []
    lat = js["latency_ms"]  # type: ignore[index]
    # closed once connected: the end is the connect, and no byte came
    assert lat["total"]["max"] == lat["connect"]["max"]  # type: ignore[index]
    assert lat["ttfb"]["p50"] is None  # type: ignore[index]


def test_bare_tcp_waits_in_c_for_the_servers_fin(adopted: list[int]) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        time.sleep(0.02)
        conn.sendall(b"220 ready\r\n")  # bytes before the FIN: kept as ttfb, not judged
        conn.close()

    for port in serve(handle):
        js = totals_of(cfg_for(port, mode="tcp", close="server"))
    assert js["connections"]["ok"] == 100 and js["errors"] == {}  # type: ignore[index]
    assert adopted == []
    lat = js["latency_ms"]  # type: ignore[index]
    assert lat["ttfb"]["p50"] >= 15 and lat["total"]["p50"] >= 15  # type: ignore[index]


def test_bare_tcp_hands_a_reset_to_python(adopted: list[int]) -> None:
    def handle(conn: socket.socket, n: int) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        time.sleep(0.02)
        conn.close()  # RST

    for port in serve(handle):
        js = totals_of(cfg_for(port, mode="tcp", close="server"))
    assert js["errors"] == {"ECONNRESET": 100}  # type: ignore[index]
    assert len(adopted) == 100


def test_summary_names_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with spawn(ServerConfig(port=free_port())) as srv:
        for kind, want in (("auto", "c"), ("python", "python")):
            monkeypatch.setenv(pump.ENV, kind)
            done = run_tcpchurn(tmp_path / kind, f"127.0.0.1:{srv.port}", "--rate", "100",
                                "--duration", "0.5")
            assert done.rc == 0, done.stderr
            summary = json.loads((tmp_path / kind / "summary.json").read_text())
            assert summary["environment"]["engine"] == want
            assert summary["connections"]["ok"] == 50


def test_poll_stops_serving_when_the_next_connection_is_due() -> None:
    """``Pump.poll(..., until)``: nothing is served when the next connection is due
    sooner than one event takes (the engine must start it first), yet a generator that
    is behind (``until`` passed, no timeout) serves at least half of ``maxevents``."""
    from tcpchurn.load._pump import Pump

    for port in serve(answers(RESPONSE)):
        with contextlib.closing(select.epoll()) as ep:
            start_at = time.monotonic()
            p = Pump(ep.fileno(), socket.AF_INET, ("127.0.0.1", port), [], REQUEST, 0,
                     start_at, 0.001, 128)
            p.set_ok(True, RESPONSE)
            p.event_cost = 1.0  # pretend an event takes 1 s: none fits before `due`
            for i in range(40):
                assert p.start(i, 0.0, 0.0) == 0
            deadline = time.monotonic() + 5
            while p.live == 40 and time.monotonic() < deadline:
                time.sleep(0.05)  # wait for the answers; poll serves nothing meanwhile
                due = time.monotonic() - start_at + 0.5
                _, others, exports = p.poll(0.0, 128, due)
                assert (others, exports) == ([], [])
            time.sleep(0.2)  # every answer (and FIN) is queued now
            assert p.live == 40
            _, others, exports = p.poll(0.0, 128, float("-inf"))  # behind
            assert (others, exports) == ([], [])
            assert p.live == 0  # at least 64 served: all 40
            rows, ok, attempted, _late, _taken_over, added = p.take()
            assert (ok, attempted, len(rows), added) == (40, 40, 40 * 5 * 8, [])


UNTIL_EOF = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"  # the FIN frames it


@pytest.mark.parametrize(("close_mode", "response"),
                         [(1, RESPONSE), (0, RESPONSE), (0, UNTIL_EOF)],
                         ids=["client", "server-length", "server-until-eof"])
def test_a_response_is_timed_when_it_arrived_not_when_it_was_served(
        close_mode: int, response: bytes) -> None:
    """The pump serves a response that waited 0.4 s in its socket (a coalesced wake-up
    waits up to a grid step; a busy loop longer): its ttfb is still the kernel's receive
    stamp (SO_TIMESTAMPNS), and so is the end of a response that its length frames,
    whoever closes.  A response that the server's FIN delimits ends with the FIN, which
    has no stamp: when it was seen."""
    from tcpchurn.load._pump import Pump

    for port in serve(answers(response)):
        with contextlib.closing(select.epoll()) as ep:
            start_at = time.monotonic()
            p = Pump(ep.fileno(), socket.AF_INET, ("127.0.0.1", port), [], REQUEST,
                     close_mode, start_at, 0.001, 128)
            p.set_ok(True, response)  # what conn.py judged complete, with the FIN
            if response == RESPONSE:
                p.set_ok(False, response)  # ... and complete without it (conn._judge)
            t0 = time.monotonic() - start_at
            assert p.start(0, t0, t0) == 0
            time.sleep(0.4)  # the answer and its FIN arrive meanwhile, in a few ms
            now, others, exports = p.poll(0.0, 128, float("-inf"))
            assert (others, exports, p.live) == ([], [], 0)
            rows = array("d", p.take()[0])
    _sched, start, _conn_t, ttfb, end = rows
    assert now - start >= 0.4
    assert 0 < ttfb - start < 0.2
    if response == RESPONSE:
        assert end == ttfb  # one segment: the response ended when it arrived
    else:
        assert end - start >= 0.4


def pump_for(ep: select.epoll, port: int, close_mode: int, response: bytes) -> Pump:
    """A pump to loopback ``port`` that knows ``response`` as complete, with the server's
    FIN and without it (what conn.py tells it once it has judged one: conn._judge)."""
    from tcpchurn.load._pump import Pump

    p = Pump(ep.fileno(), socket.AF_INET, ("127.0.0.1", port), [], REQUEST, close_mode,
             time.monotonic(), 0.001, 128)
    p.set_ok(True, response)
    p.set_ok(False, response)
    return p


BIG = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000  # 2 reads


@pytest.mark.parametrize("response", [RESPONSE, BIG], ids=["one-read", "two-reads"])
def test_no_slot_keeps_a_buffer(response: bytes) -> None:
    """A response that is complete in one read is judged where it was read and never
    copied; one that takes more reads is copied into its slot's buffer, which goes with
    the connection (``Pump.buffered``).  Before, every slot kept its buffer for the next
    connection, so the peak of in-flight after a stall stayed in memory for the rest of
    the run (a server stopped for 0.5 s at 10,000/s: +3.2 MB a worker, bench/soak.py)."""
    for port in serve(answers(response)):
        with contextlib.closing(select.epoll()) as ep:
            p = pump_for(ep, port, 1, response)
            for i in range(20):
                assert p.start(i, 0.0, 0.0) == 0
            time.sleep(0.3)  # every answer is queued in full
            _, others, exports = p.poll(0.0, 128, float("-inf"))
            assert (others, exports, p.live, p.buffered) == ([], [], 0, 0)
            assert p.take()[1] == 20  # all judged complete in C


def test_a_response_waiting_for_the_servers_fin_is_kept_until_then() -> None:
    """``--close server``: a complete response whose FIN is still to come is the one
    thing a live slot keeps (its bytes are compared again with the FIN)."""
    for port in serve(answers(RESPONSE, close_after=0.3)):
        with contextlib.closing(select.epoll()) as ep:
            p = pump_for(ep, port, 0, RESPONSE)
            for i in range(10):
                assert p.start(i, 0.0, 0.0) == 0
            time.sleep(0.15)  # the answers are in, the FINs are not
            p.poll(0.0, 128, float("-inf"))
            assert (p.live, p.buffered) == (10, 10 * 1024)
            deadline = time.monotonic() + 5
            while p.live and time.monotonic() < deadline:
                p.poll(0.05, 128, float("-inf"))
            assert (p.live, p.buffered) == (0, 0)
            assert p.take()[1] == 10


@pytest.mark.parametrize("framed", [True, False], ids=["length", "until-eof"])
def test_with_close_server_total_ends_with_the_response_not_the_fin(
        engine: str, framed: bool) -> None:
    """``--close server``: a server that answers at once and closes 50 ms later.  A
    response with a length is complete at its last byte, so ``total`` ends there, as
    when the client closes first; one that only the FIN delimits ends with the FIN.
    Both paths (the ``engine`` fixture)."""
    response = RESPONSE if framed else UNTIL_EOF
    for port in serve(answers(response, close_after=0.05)):
        js = totals_of(cfg_for(port, rate=100, duration=0.3))
    assert js["connections"]["ok"] == 30 and js["errors"] == {}  # type: ignore[index]
    lat = js["latency_ms"]  # type: ignore[index]
    assert lat["ttfb"]["p50"] < 25  # type: ignore[index]
    if framed:
        assert lat["total"]["max"] < 25  # type: ignore[index]
    else:
        assert lat["total"]["p50"] >= 50  # type: ignore[index]


def test_a_handshake_in_progress_is_counted_as_connecting() -> None:
    """run() sleeps on its timer alone only while no handshake of its own is pending (a
    connect's end has no receive stamp): the pump counts them.  A listener that never
    accepts, its queue full, drops the SYN: the connection stays in SYN_SENT."""
    from tcpchurn.load._pump import Pump

    with contextlib.ExitStack() as stack:
        lsock = stack.enter_context(socket.socket())
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)  # one connection fills it (sk_acceptq_is_full: > 0)
        addr = lsock.getsockname()
        filler = stack.enter_context(socket.create_connection(addr, timeout=2))
        assert filler.fileno() >= 0
        ep = stack.enter_context(contextlib.closing(select.epoll()))
        start_at = time.monotonic()
        p = Pump(ep.fileno(), socket.AF_INET, addr, [], REQUEST, 0, start_at, 0.001, 8)
        assert p.start(0, 0.0, 0.0) == 0
        assert (p.live, p.connecting) == (1, 1)
        exports = p.expire(time.monotonic() - start_at, 0.0)  # handed over: not ours
        assert len(exports) == 1 and (p.live, p.connecting) == (0, 0)
        os.close(exports[0][0])


@pytest.mark.parametrize("coalesce", ["1", "0"])
def test_a_worker_with_a_start_every_grid_step_sleeps_on_its_timer(
        monkeypatch: pytest.MonkeyPatch, coalesce: str) -> None:
    """At 8,000/s one worker has a start every 125 us, within a grid step (250 us) of the
    last: between them it sleeps on its timer alone, and serves what completed meanwhile
    when it fires (coalesced wake-ups).  ``TCPCHURN_COALESCE=0`` sleeps on everything.
    Either way every connection is fine."""
    monkeypatch.delenv(pump.ENV, raising=False)
    monkeypatch.setenv(pump.COALESCE_ENV, coalesce)
    with spawn(ServerConfig(port=free_port())) as srv:
        out = RunTotals()
        engine = Engine(cfg_for(srv.port, rate=8000, duration=0.5), out.add)
        engine.run()
    js = out.to_json()
    assert js["connections"]["ok"] == 4000 and js["errors"] == {}  # type: ignore[index]
    assert engine.pump is not None
    if coalesce == "1":
        assert engine.pump.naps >= 500  # ~2,000 grid steps; a busy VM takes some away
    else:
        assert engine.pump.naps == 0


def test_the_coalescing_of_an_a_b_measurement_is_checked_before_any_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pump.ENV, raising=False)
    monkeypatch.delenv(pump.COALESCE_ENV, raising=False)
    assert pump.coalesce(True) is True
    monkeypatch.setenv(pump.COALESCE_ENV, "0")
    assert pump.coalesce(True) is False
    monkeypatch.setenv(pump.COALESCE_ENV, "yes")
    with pytest.raises(BadValue, match="TCPCHURN_COALESCE"):
        pump.engine_kind(cfg_for(80))  # what the runner asks first


def new_pump(port: int = 9) -> Pump:
    """A pump that starts nothing (for what needs no connection)."""
    from tcpchurn.load._pump import Pump

    return Pump(-1, socket.AF_INET, ("127.0.0.1", port), [], b"GET /", 0, 0.0, 0.001, 8)


def bind(p: Pump, rec: Recorder) -> None:
    p.bind(*counts_and_layout(rec.hists))


def test_bound_histograms_count_as_hdrh_does() -> None:
    """What the C path writes into hdrh's counts is what ``record_value`` would: the
    same index for every value (bucket edges, 0, the top, beyond it) and the same
    total, min and max once ``take()``'s figures are applied (``Recorder.counted``)."""
    p = new_pump()
    rec = Recorder()
    bind(p, rec)
    want = new_histogram()
    us = [0, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 65_537, 999_999, 1_000_000,
          123_456_789, HIGHEST_US - 1, HIGHEST_US]
    for v in us:
        p._record(HISTOGRAMS.index("total"), v / 1e6)
        want.record_value(v)
    p._record(HISTOGRAMS.index("total"), -0.5)  # negative: 0, as stats._us clips it
    want.record_value(0)
    p._record(HISTOGRAMS.index("total"), 10.0 * HIGHEST_US / 1e6)  # beyond: the top
    want.record_value(HIGHEST_US)
    *_, added = p.take()
    rec.counted(added)
    got = rec.hists["total"]
    assert list(got.counts) == list(want.counts)
    assert (got.total_count, got.min_value, got.max_value) == (
        want.total_count, want.min_value, want.max_value)
    assert all(rec.hists[n].total_count == 0 for n in HISTOGRAMS if n != "total")
    assert p.take()[5] == [(0, 0, 0)] * len(HISTOGRAMS)  # take() started afresh


def test_rebinding_moves_recording_to_the_new_histograms() -> None:
    p = new_pump()
    first, second = Recorder(), Recorder()
    bind(p, first)
    p._record(0, 0.001)
    bind(p, second)  # an interval's end: the next interval's histograms
    p._record(0, 0.002)
    p._record(0, 0.003)
    *_, added = p.take()
    second.counted(added)
    assert sum(first.hists[HISTOGRAMS[0]].counts) == 1
    assert sum(second.hists[HISTOGRAMS[0]].counts) == 2
    assert second.hists[HISTOGRAMS[0]].total_count == 2


# -- the lanes: the schedule shared by the workers (_pump.c, engine.new_board) ----------


def test_a_lane_holds_a_ring_of_due_times_and_drop_takes_the_rest() -> None:
    from tcpchurn.load import _pump
    from tcpchurn.load.engine import new_board

    board = new_board(2)
    p = new_pump()
    p.share(board, 1, 2)
    assert (p.backlog, p.next_due) == (0, float("inf"))  # a new board: every lane empty
    times = array("d", (i * 0.001 for i in range(_pump.LANE_RING + 10)))
    assert p.push(times) == _pump.LANE_RING  # no more than the ring holds
    assert p.push(array("d", [9.0])) == 0
    assert (p.backlog, p.next_due) == (_pump.LANE_RING, 0.0)
    other = new_pump()
    other.share(board, 0, 2)
    assert (other.backlog, other.next_due) == (0, float("inf"))  # lane 0 is another's
    assert p.drop() == _pump.LANE_RING
    assert (p.backlog, p.drop()) == (0, 0)
    assert p.push(array("d", [5.0, 6.0])) == 2  # the ring's cells are reused in order
    assert (p.backlog, p.next_due) == (2, 5.0)


def test_share_refuses_a_board_too_small_or_a_lane_outside_it() -> None:
    from tcpchurn.load import _pump
    from tcpchurn.load.engine import new_board

    p = new_pump()
    with pytest.raises(RuntimeError, match="share"):
        _ = p.backlog  # no lanes yet
    with pytest.raises(ValueError, match="need 3 lanes"):
        p.share(new_board(2), 0, 3)
    with pytest.raises(ValueError, match="lane 2"):
        p.share(new_board(2), 2, 2)
    with pytest.raises(ValueError, match="aligned"):
        p.share(memoryview(bytearray(_pump.LANE_BYTES + 1))[1:], 0, 1)  # odd: never 64
