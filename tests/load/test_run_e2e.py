"""`tcpchurn run` end to end: the built-in server, real nginx, a watched namespace, signals.

Modest bounded loads on loopback (300/s for 3 s): the counts in summary.json are exact,
the timeline has one line per interval with a client kernel sample in each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.load.workers import worker_cpus
from tests.conftest import sh
from tests.load.nginx_helper import free_port
from tests.load.runhelp import ROOT, consistent, misbehaving, run_tcpchurn, tcpchurn_argv


def _expected_rc(summary: dict[str, Any]) -> int:
    """The exit code cli/__init__.py documents, from the summary's own content."""
    conns = summary["connections"]
    if conns["ok"] == 0 and conns["failed"]:
        return 3
    return 1 if summary["findings"] or conns["failed"] or summary["generator_saturated"] else 0


def _check_timeline(timeline: list[dict[str, Any]], intervals: int) -> None:
    assert [line["t"] for line in timeline] == [float(i) for i in range(1, intervals + 1)]
    for line in timeline:
        client = line["client"]
        assert client["where"] == "host"
        assert isinstance(client["sockstat"]["tw"], int)
    # The connections' descriptors are counted in worker 0 (they are not ours).
    assert timeline[0]["client"]["fds"]["process"]["pid"] != os.getpid()
    # Every written line has deltas (a baseline sample is taken before the load), and the
    # kernel saw at least our connects (the namespace may have other traffic; a sample is
    # taken when an interval arrives, not exactly on its boundary, so only the sum holds).
    opens = sum(line["client"]["counters_delta"]["Tcp"]["ActiveOpens"] for line in timeline)
    assert opens >= sum(line["load"]["attempted"] for line in timeline)
    # The last interval always carries the full per-destination dump.
    assert timeline[-1]["client"]["destinations"] is not None


def test_no_pin_leaves_the_workers_free(tmp_path: Path) -> None:
    done = run_tcpchurn(tmp_path, "--rate", "100", "--duration", "1", "--workers", "2",
                        "--no-pin")
    assert done.summary["connections"]["ok"] == 100
    assert done.summary["environment"]["worker_cpus"] is None


def test_builtin_server_exact_counts(tmp_path: Path) -> None:
    done = run_tcpchurn(tmp_path, "--rate", "300", "--duration", "3", "--workers", "2",
                        "--html")
    summary = done.summary
    assert summary["target"] in (tmp_path / "report.html").read_text()
    assert summary["connections"]["attempted"] == 900
    assert summary["connections"]["ok"] == 900
    assert summary["errors"] == {} and summary["interrupted"] is False
    assert summary["target"].startswith("http://127.0.0.1:")
    assert summary["config"]["builtin_server"]["host"] == "127.0.0.1"
    assert summary["config"]["target"] == summary["target"]
    assert summary["environment"]["source_addresses"] == ["127.0.0.1"]
    assert summary["environment"]["cpus"] == os.cpu_count()
    # one entry per worker: the slice it was granted (run.md, "Keeping the schedule")
    slices = summary["environment"]["worker_slice_us"]
    assert len(slices) == 2 and slices[0] == slices[1] and slices[0] in (100.0, None)
    # two workers, a CPU of its own each (--pin, the default; None on a 1-CPU machine)
    assert summary["environment"]["worker_cpus"] == worker_cpus(2)
    assert summary["duration_s"] == 3.0
    timeline = done.timeline
    _check_timeline(timeline, 3)
    assert all(line["server"] is None for line in timeline)
    assert summary["environment"]["server_sysctls"] == {}
    assert [line["load"]["attempted"] for line in timeline] == [300, 300, 300]
    consistent(summary, timeline)
    assert done.rc == _expected_rc(summary), done.stderr


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Debian's nginx on 127.0.0.1:<free port>, one process; yields (port, pid)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {proc.stderr}") from None
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def test_nginx_with_watch_pid(tmp_path: Path, nginx: tuple[int, int]) -> None:
    port, pid = nginx
    done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "300",
                        "--duration", "3", "--workers", "2", "--watch-pid", str(pid))
    summary = done.summary
    assert summary["connections"]["attempted"] == summary["connections"]["ok"] == 900
    assert summary["errors"] == {}
    timeline = done.timeline
    _check_timeline(timeline, 3)
    for line in timeline:
        server = line["server"]
        assert server["where"] == f"pid {pid}"
        assert server["fds"]["process"]["pid"] == pid
        assert any(q["local"] == f"127.0.0.1:{port}" for q in server["listen"])
    consistent(summary, timeline)
    assert done.rc == _expected_rc(summary), done.stderr


@pytest.mark.root
def test_watch_netns_samples_that_namespace(
    tmp_path: Path, make_netns: Callable[[], str]
) -> None:
    ns = make_netns()
    sh("ip", "addr", "add", "198.18.0.1/32", "dev", "lo", netns=ns)
    with misbehaving("ok", host="198.18.0.1", netns=ns, port=80):
        # The client stays in our namespace... which cannot reach 198.18.0.1 in ns; so
        # it runs in ns too, and --watch-netns must still read ns through setns(2).
        done = run_tcpchurn(tmp_path, "http://198.18.0.1:80/", "--rate", "100",
                            "--duration", "2", "--workers", "1", "--watch-netns", ns,
                            netns=ns)
    summary = done.summary
    assert summary["connections"]["ok"] == 200
    # A new namespace starts from the kernel defaults: its own sysctls are recorded.
    server_sysctls = summary["environment"]["server_sysctls"]
    assert server_sysctls["net.ipv4.tcp_max_tw_buckets"] == int(
        sh("sysctl", "-n", "net.ipv4.tcp_max_tw_buckets", netns=ns))
    for line in done.timeline:
        assert line["server"]["where"] == f"netns {ns}"
        assert any(q["local"] == "198.18.0.1:80" for q in line["server"]["listen"])
    assert done.rc == _expected_rc(summary), done.stderr


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], limit: float) -> None:
    """Wait (bounded) until the timeline has ``n`` complete lines."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines")


@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-the-process-group", "sigint", "sigterm"],
)
def test_signal_mid_run_still_writes_both_files(
    tmp_path: Path, signum: int, whole_group: bool
) -> None:
    """Ctrl-C in a terminal reaches every process of the group (workers, the built-in
    server); `kill` reaches only tcpchurn.  Either way the load stops gracefully."""
    out = tmp_path / "out"
    prom = socket.socket()
    prom.bind(("127.0.0.1", 0))
    prom_port = prom.getsockname()[1]
    prom.close()
    argv = tcpchurn_argv("run", "--rate", "200", "--duration", "30", "--workers", "1",
                         "--out", str(out), "--quiet", "--prometheus", str(prom_port))
    proc = subprocess.Popen(argv, cwd=ROOT, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out / "timeline.jsonl", 2, proc, limit=20)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "tcpchurn_connections_attempted" in metrics
        assert "tcpchurn_conntrack_max" in metrics
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    timeline = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert summary["interrupted"] is True
    assert len(timeline) >= 2
    assert summary["duration_s"] < 30
    assert summary["connections"]["attempted"] > 0
    # The built-in server outlived the graceful stop: nothing failed.
    assert summary["errors"] == {}
    consistent(summary, timeline)



def test_watch_remote_reads_a_tcpchurn_watch_exporter(tmp_path: Path) -> None:
    port = free_port()
    watch = subprocess.Popen(
        tcpchurn_argv("watch", "--prometheus", str(port), "--json", "--count", "60"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert watch.stdout is not None
        watch.stdout.readline()  # the first sample exists, so the exporter serves
        url = f"http://127.0.0.1:{port}/metrics"
        done = run_tcpchurn(tmp_path, "--rate", "100", "--duration", "2", "--workers", "1",
                            "--watch-remote", url)
    finally:
        watch.terminate()
        watch.wait(10)
    summary = done.summary
    assert summary["connections"]["ok"] == 200
    for line in done.timeline:
        assert line["server"]["where"] == f"remote {url}"
        assert isinstance(line["server"]["sockstat"]["tw"], int)
    assert done.rc == _expected_rc(summary), done.stderr


def test_source_ips_are_used_and_recorded(tmp_path: Path) -> None:
    peers: list[str] = []
    with misbehaving("ok", peers=peers) as port:
        done = run_tcpchurn(tmp_path, f"http://127.0.0.1:{port}/", "--rate", "100",
                            "--duration", "1", "--workers", "1", "--close", "client",
                            "--source-ip", "127.0.0.2/31")
    summary = done.summary
    assert summary["environment"]["source_addresses"] == ["127.0.0.2", "127.0.0.3"]
    assert summary["config"]["source_ips"] == ["127.0.0.2", "127.0.0.3"]
    assert summary["connections"]["ok"] == 100
    # The server saw connections from both addresses and from no other.
    assert sorted(peers) == ["127.0.0.2", "127.0.0.3"]
