"""Every error class, end to end: a real kernel, real sockets, `tcpchurn run` as a user runs it.

Each test sets up one way for connections to fail, runs a short bounded load, and checks
that summary.json names exactly that error, with counts that add up.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sh
from tests.load.runhelp import consistent, misbehaving, run_tcpchurn

# every test here runs through both engines (conftest.py)
pytestmark = pytest.mark.usefixtures("engine")


def _only_error(name: str, summary: dict[str, object]) -> None:
    errors = summary["errors"]
    assert isinstance(errors, dict)
    assert set(errors) == {name}, errors


def _first_finding(summary: dict[str, Any]) -> tuple[str, str]:
    """(limit, side) of the diagnosis' first finding: the end of the errno's journey.

    ``generator_saturated`` is skipped: on a busy shared machine our own lag may be
    diagnosed too, and it says nothing about the error under test.
    """
    findings = [f for f in summary["findings"] if f["limit"] != "generator_saturated"]
    assert findings, f"nothing was diagnosed: {summary['findings']}"
    return findings[0]["limit"], findings[0]["side"]


#: both modes for the errors a bare TCP connection meets too (both paths: ``engine``)
MODES = pytest.mark.parametrize("mode", ["http", "tcp"])


@MODES
def test_closed_port_is_econnrefused(tmp_path: Path, mode: str) -> None:
    # A bound socket that does not listen holds the port: SYNs to it get an RST.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "100",
                            "--duration", "1", "--workers", "1", "--mode", mode)
    summary = done.summary
    _only_error("ECONNREFUSED", summary)
    assert summary["connections"]["ok"] == 0
    assert summary["errors"]["ECONNREFUSED"] == summary["connections"]["attempted"] == 100
    consistent(summary, done.timeline)
    assert done.rc == 3, done.stderr
    assert "ECONNREFUSED" in done.stderr
    assert _first_finding(summary) == ("server_refused", "server")


def test_server_that_resets_is_econnreset(tmp_path: Path) -> None:
    with misbehaving("reset") as port:
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "100",
                            "--duration", "1", "--workers", "1", "--timeout", "2")
    _only_error("ECONNRESET", done.summary)
    assert done.summary["errors"]["ECONNRESET"] == 100
    consistent(done.summary, done.timeline)
    assert done.rc == 3


def test_server_answering_garbage_is_bad_response(tmp_path: Path) -> None:
    with misbehaving("garbage") as port:
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "100",
                            "--duration", "1", "--workers", "1", "--timeout", "2")
    _only_error("BAD_RESPONSE", done.summary)
    assert done.summary["errors"]["BAD_RESPONSE"] == 100
    consistent(done.summary, done.timeline)
    assert done.rc == 3


def test_server_that_never_answers_is_response_timeout(tmp_path: Path) -> None:
    with misbehaving("hang") as port:
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "50",
                            "--duration", "1", "--workers", "1", "--timeout", "1")
    _only_error("RESPONSE_TIMEOUT", done.summary)
    assert done.summary["errors"]["RESPONSE_TIMEOUT"] == 50
    consistent(done.summary, done.timeline)
    assert _first_finding(done.summary) == ("server_slow", "server")


def test_rlimit_nofile_64_is_emfile(tmp_path: Path) -> None:
    # The server holds every connection open, so the client's 64 descriptors run out.
    with misbehaving("hang") as port:
        # --timeout 3 > --duration 2: no descriptor is freed while connections start.
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "200",
                            "--duration", "2", "--workers", "1", "--timeout", "3",
                            nofile=64)
    summary = done.summary
    assert summary["environment"]["rlimit_nofile"] == [64, 64]
    assert set(summary["errors"]) <= {"EMFILE", "RESPONSE_TIMEOUT"}
    assert summary["errors"]["EMFILE"] > 300
    assert summary["errors"]["RESPONSE_TIMEOUT"] < 64
    consistent(summary, done.timeline)
    assert any("RLIMIT_NOFILE" in w for w in summary["warnings"])
    # The client's fd table (worker 0's) shows the limit that was hit.
    procs = [line["client"]["fds"]["process"] for line in done.timeline]
    assert any(p is not None and p["soft"] == 64 and p["open"] >= 60 for p in procs), procs
    assert _first_finding(summary) == ("fd_process", "client")


@pytest.mark.root
@MODES
def test_dropped_syns_are_etimedout(tmp_path: Path, make_netns: Callable[[], str],
                                    mode: str) -> None:
    ns = make_netns()
    # Drop every SYN to port 9 in this namespace: connect() waits, then --timeout fires.
    sh("nft", "add table inet tcpchurn_t; add chain inet tcpchurn_t input { type filter "
       "hook input priority 0; }; add rule inet tcpchurn_t input tcp dport 9 tcp flags syn "
       "drop", netns=ns)
    done = run_tcpchurn(tmp_path, "http://127.0.0.1:9/", "--rate", "20", "--duration", "1",
                        "--workers", "1", "--timeout", "1", "--mode", mode, netns=ns)
    _only_error("ETIMEDOUT", done.summary)
    assert done.summary["errors"]["ETIMEDOUT"] == 20
    consistent(done.summary, done.timeline)
    assert done.rc == 3
    assert _first_finding(done.summary) == ("unreachable", "server")


@pytest.mark.root
@MODES
def test_fifty_ephemeral_ports_is_eaddrnotavail(
    tmp_path: Path, make_netns: Callable[[], str], mode: str
) -> None:
    ns = make_netns()
    # Not a loopback address: tcp_tw_reuse=2 would reuse TIME_WAIT ports towards 127/8
    # (KERNEL.md §B); and tw_reuse=0 explicitly, so TIME_WAIT holds each port for 60 s.
    sh("ip", "addr", "add", "198.18.0.1/32", "dev", "lo", netns=ns)
    sh("sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40049", netns=ns)
    sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0", netns=ns)
    # The server listens on 80, outside the 50-port range, so all 50 are the client's.
    with misbehaving("ok", host="198.18.0.1", netns=ns, port=80) as port:
        done = run_tcpchurn(tmp_path, f"http://198.18.0.1:{port}/", "--rate", "200",
                            "--duration", "1", "--workers", "1", "--close", "client",
                            "--timeout", "2", "--mode", mode, netns=ns)
    summary = done.summary
    _only_error("EADDRNOTAVAIL", summary)
    assert summary["connections"]["ok"] == 50
    assert summary["errors"]["EADDRNOTAVAIL"] == 150
    assert summary["environment"]["sysctls"]["net.ipv4.ip_local_port_range"] == [40000, 40049]
    consistent(summary, done.timeline)
    assert done.rc == 1
    assert _first_finding(summary) == ("ephemeral_ports", "client")
