"""Real runs in throw-away namespaces: `tcpchurn run` against `tcpchurn serve`, then the
verdict written into summary.json names the limit that was set up to fail.

Each test owns a `tcpchurn-t-*` namespace (make_netns), so its TcpExt counters and
sysctls are its own; the server is a child process killed by pid; loads are bounded
(a few seconds, a few hundred connections).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.diagnose.forecast import Plan, forecast
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls
from tests.conftest import sh

PORT = 8080


@contextmanager
def server(ns: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`tcpchurn serve` inside ``ns`` on 127.0.0.1:PORT, stopped by pid afterwards."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tcpchurn", "serve",
         "--port", str(PORT), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while f":{PORT:04X} " not in sh("cat", "/proc/net/tcp", "/proc/net/tcp6", netns=ns):
            assert proc.poll() is None, "tcpchurn serve exited"
            assert time.monotonic() < deadline, "tcpchurn serve did not listen"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(ns: str, out: Path, *args: str, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """`tcpchurn run` inside ``ns`` (after ``prefix``, e.g. prlimit); returns summary.json."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *prefix, sys.executable, "-m", "tcpchurn", "run",
         f"http://127.0.0.1:{PORT}/", "--out", str(out), "--quiet", "--workers", "1", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode in (0, 1, 3), done.stderr  # 3: no connection ever succeeded
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")]


def test_slow_accept_with_backlog_4_is_accept_queue(make_netns: Callable[[], str],
                                                    tmp_path: Path) -> None:
    ns = make_netns()
    with server(ns, "--backlog", "4", "--accept-delay", "50"):
        summary = run(ns, tmp_path, "--rate", "200", "--duration", "3", "--timeout", "2")
    findings = summary["findings"]
    assert findings, "nothing diagnosed"
    first = findings[0]
    assert (first["limit"], first["side"]) == ("accept_queue", "server")
    assert first["evidence"]["backlog"] == 4
    assert first["evidence"]["overflows_total"] > 0
    # the SYN queue filling behind it is a consequence, not a second cause
    assert "syn_queue" not in [f["limit"] for f in findings]


def test_client_closing_first_exhausts_a_200_port_range_when_forecast(
        make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40199", netns=ns)
    sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0", netns=ns)
    rate = 100.0
    with Procfs(netns=ns) as p:
        sysctls = Sysctls(read_sysctls(p))
    plan = Plan(rate=rate, close="client", loopback=True, lifetime_s=0.0)
    predicted = next(r for r in forecast(plan, sysctls) if r.limit == "ephemeral_ports")
    assert predicted.seconds_to_full == 2.0  # 200 ports / 100 per s
    with server(ns, "--close", "client"):
        summary = run(ns, tmp_path, "--rate", str(rate), "--duration", "4",
                      "--close", "client", "--timeout", "2")
    first = summary["findings"][0]
    assert (first["limit"], first["side"]) == ("ephemeral_ports", "client")
    assert summary["errors"].get("EADDRNOTAVAIL", 0) > 0
    # DESIGN.md: the forecast of time to exhaustion within 25% of the measured one.
    assert first["onset_s"] == pytest.approx(predicted.seconds_to_full, rel=0.25)


def test_healthy_run_names_nothing(make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    with server(ns):
        summary = run(ns, tmp_path, "--rate", "200", "--duration", "3")
    assert summary["connections"]["failed"] == 0
    assert [f["limit"] for f in summary["findings"]] == []
    assert summary["headroom"]


def test_ipv4_clients_of_a_dual_stack_listener_get_the_tcp6_note(
        make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    with server(ns, "--host", "::"):  # [::]:8080, bindv6only=0: IPv4 accepted as v4-mapped
        summary = run(ns, tmp_path, "--rate", "200", "--duration", "6")
    assert summary["connections"]["failed"] == 0
    notes = [f for f in summary["findings"] if f["limit"] == "dual_stack_tw"]
    assert [(f["side"], f["severity"]) for f in notes] == [("server", "warning")]
    assert notes[0]["evidence"]["v4mapped_peak"] >= 900  # 200/s x 5 s, server closes first
    assert [f["limit"] for f in summary["findings"]] == ["dual_stack_tw"]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) missing")
def test_client_out_of_descriptors_is_fd_process(make_netns: Callable[[], str],
                                                 tmp_path: Path) -> None:
    ns = make_netns()
    rate, soft, timeout = 200.0, 300, 3.0
    # A server that accepts once a second never answers in time: every connection stays
    # open for the whole --timeout, so the client needs rate x timeout = 600 descriptors.
    predicted = next(r for r in forecast(Plan(rate=rate, lifetime_s=timeout), Sysctls({}),
                                         (soft, soft)) if r.limit == "fd_process")
    assert predicted.seconds_to_full == 1.5  # 300 / 200 per s
    with server(ns, "--accept-delay", "1000"):
        summary = run(ns, tmp_path, "--rate", str(rate), "--duration", "4",
                      "--timeout", str(timeout), prefix=("prlimit", f"--nofile={soft}:{soft}"))
    first = summary["findings"][0]
    assert (first["limit"], first["side"]) == ("fd_process", "client")
    assert summary["errors"].get("EMFILE", 0) > 0
    assert first["onset_s"] == pytest.approx(predicted.seconds_to_full, rel=0.25)


def test_server_closing_first_over_tiny_tw_buckets_is_a_tw_buckets_warning(
        make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=100", netns=ns)
    with server(ns):  # the server closes first: TIME_WAIT on the server's sockets
        summary = run(ns, tmp_path, "--rate", "300", "--duration", "3")
    assert summary["connections"]["failed"] == 0  # overflow is mostly harmless ...
    found = [(f["limit"], f["side"], f["severity"]) for f in summary["findings"]]
    assert found == [("tw_buckets", "server", "warning")]  # ... so only a warning
    evidence = summary["findings"][0]["evidence"]
    assert evidence["max_tw"] == 100 and evidence["overflow_total"] > 0


# KERNEL.md §1 F: with syncookies off and every bare ACK to the server dropped, handshakes
# never complete and requests pile up in SYN_RECV until the listener's queue is full.
DROP_ACKS = f"""table inet tcpchurn_t_synq {{
  chain input {{
    type filter hook input priority filter; policy accept;
    tcp dport {PORT} tcp flags & (syn | ack | fin | rst) == ack drop
  }}
}}
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
def test_handshakes_never_completing_fill_the_syn_queue(make_netns: Callable[[], str],
                                                        tmp_path: Path) -> None:
    ns = make_netns()  # the nft table lives and dies with this namespace
    sh("sysctl", "-qw", "net.ipv4.tcp_syncookies=0", netns=ns)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=DROP_ACKS, text=True,
                   check=True)
    with server(ns, "--backlog", "64"):
        summary = run(ns, tmp_path, "--rate", "200", "--duration", "3", "--timeout", "2")
    first = summary["findings"][0]
    assert (first["limit"], first["side"]) == ("syn_queue", "server")
    assert first["evidence"]["drops_total"] > 0 and first["evidence"]["syncookies"] == 0
    # the timeouts it causes are its consequence, not a second finding
    assert [f["limit"] for f in summary["findings"]] == ["syn_queue"]


def test_nothing_listening_is_server_refused(make_netns: Callable[[], str],
                                             tmp_path: Path) -> None:
    ns = make_netns()  # no server: every SYN is answered by a RST
    summary = run(ns, tmp_path, "--rate", "100", "--duration", "2")
    first = summary["findings"][0]
    assert (first["limit"], first["side"], first["severity"]) == (
        "server_refused", "server", "stopped")
    assert first["evidence"]["refused_total"] == summary["errors"]["ECONNREFUSED"] > 0
