"""`python -m tcpchurn watch` as a user runs it: bad input, JSON lines, Prometheus."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tcpchurn.kernel import sockdiag
from tcpchurn.kernel.procfs import Procfs
from tests.load.nginx_helper import free_port

SCHEMA = Path(__file__).parent.parent / "docs" / "schema.md"


def tcpchurn(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpchurn", *args], capture_output=True, text=True, timeout=timeout
    )


def schema_keys() -> set[str]:
    """The top-level keys of the kernel sample in docs/schema.md §1."""
    section = SCHEMA.read_text().split("## 1.")[1].split("## 2.")[0]
    return set(re.findall(r'^  "([a-z_0-9]+)":', section, flags=re.M))


def scrape_until(url: str, needle: str, limit: float = 10.0) -> str:
    """The exporter's text once it contains ``needle`` (bounded wait), else the last try."""
    text = ""
    deadline = time.monotonic() + limit
    while needle not in text and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            time.sleep(0.05)
    return text



@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--netns", "tcpchurn-t-nosuchns"], "tcpchurn-t-nosuchns"),
        (["--pid", "999999999"], "999999999"),
        (["--interval", "0"], "--interval"),
        (["--interval", "-2"], "--interval"),
        (["--interval", "soon"], "soon"),
        (["--count", "0"], "--count"),
        (["--detail-every", "0"], "--detail-every"),
        (["--prometheus", "70000"], "70000"),
        (["--netns", "a", "--pid", "1"], "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    out = tcpchurn("watch", "--once", *args)
    assert out.returncode == 2, out
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and "Traceback" not in out.stderr


@pytest.mark.root
def test_not_permitted_without_cap_sys_admin(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    # root without CAP_SYS_ADMIN in its bounding set cannot setns(2) into another netns
    out = subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-sys_admin",
            sys.executable,
            "-m",
            "tcpchurn",
            "watch",
            "--netns",
            ns,
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert ns in out.stderr and "root" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.root
def test_json_lines_follow_the_schema(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    out = tcpchurn(
        "watch", "--netns", ns, "--json", "--count", "3", "--interval", "0.1", "--detail-every", "2"
    )
    assert out.returncode == 0, out.stderr
    samples = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(samples) == 3
    for s in samples:
        assert set(s) >= schema_keys()
        assert s["where"] == f"netns {ns}"
        assert set(s["tcp"]["states"]) == set(sockdiag.STATE_NAMES)
    assert samples[0]["interval"] is None and samples[0]["counters_delta"] is None
    assert all(s["interval"] > 0 for s in samples[1:])
    # full dumps on samples 0 and 2 (--detail-every 2), the cheap set in between
    assert [s["tcp"]["states_v4"] is not None for s in samples] == [True, False, True]
    assert [s["destinations"] is not None for s in samples] == [True, False, True]
    assert [s["tcp"]["source"] for s in samples] == ["sock_diag", "sockstat", "sock_diag"]


@pytest.mark.root
def test_live_view_once_in_a_namespace(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    with Procfs(netns=ns) as procfs:
        lst = procfs.call(lambda: socket.socket())
        try:
            lst.bind(("127.0.0.1", 0))
            lst.listen(7)
            out = tcpchurn("watch", "--netns", ns, "--once")
        finally:
            lst.close()
    assert out.returncode == 0, out.stderr
    assert f"netns {ns}" in out.stdout
    row = next(line for line in out.stdout.splitlines() if "accept queue 127.0.0.1:" in line)
    assert " 7 " in row  # the backlog, as the limit of that row
    assert "closest to full" in out.stdout


@pytest.mark.root
def test_prometheus_scrape_matches_the_namespace(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    port = free_port()
    with Procfs(netns=ns) as procfs:
        socks = [procfs.call(lambda: socket.socket()) for _ in range(6)]
        lst, clients = socks[0], socks[1:]
        lst.bind(("127.0.0.1", 0))
        lst.listen(2)
        for c in clients:  # never accepted: the queue holds backlog + 1 = 3
            c.setblocking(False)
            c.connect_ex(lst.getsockname())
        local = f"127.0.0.1:{lst.getsockname()[1]}"
        want = {x.local: (x.queue, x.backlog) for x in sockdiag.listeners(procfs)}[local]
        ct_count = procfs.read_optional("sys/net/netfilter/nf_conntrack_count")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tcpchurn",
                "watch",
                "--netns",
                ns,
                "--json",
                "--prometheus",
                str(port),
                "--interval",
                "0.2",
                "--count",
                "100",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for _ in range(3):  # a full sample, then cheap ones (--detail-every 5)
                cheap = json.loads(proc.stdout.readline())
            assert cheap["tcp"]["states_v4"] is None
            text = scrape_until(f"http://127.0.0.1:{port}/metrics", "tcpchurn_listen_queue")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            for s in socks:
                s.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    queue = {s.labels["local"]: s.value for s in families["tcpchurn_listen_queue"].samples}
    backlog = {s.labels["local"]: s.value for s in families["tcpchurn_listen_backlog"].samples}
    assert (queue[local], backlog[local]) == want == (3, 2)
    # every state, although the latest samples only dumped LISTEN (carried forward)
    states = {s.labels["state"]: s.value for s in families["tcpchurn_tcp_sockets"].samples}
    assert set(states) == set(sockdiag.STATE_NAMES)
    assert states["SYN_SENT"] == len(clients) - 3
    assert all(s.labels["side"] == f"netns {ns}" for s in families["tcpchurn_tcp_sockets"].samples)
    assert families["tcpchurn_listen_overflows"].type == "counter"
    assert "tcpchurn_listen_overflows_total" in text
    if ct_count is not None:  # nf_conntrack loaded: this namespace's own count
        entries = families["tcpchurn_conntrack_entries"]
        assert entries.type == "gauge"
        assert [s.value for s in entries.samples] == [int(ct_count)]
    assert all(f.documentation for f in families.values())
    assert all(f.name.startswith("tcpchurn_") for f in families.values())


@pytest.mark.root
def test_pid_watches_that_process_namespace_and_fds(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        # `ip netns exec` execs sleep in the same pid once it has entered the namespace
        while Path(f"/proc/{sleeper.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        out = tcpchurn("watch", "--pid", str(sleeper.pid), "--once", "--json")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 0, out.stderr
    (sample,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert sample["where"] == f"pid {sleeper.pid}"
    proc = sample["fds"]["process"]
    assert proc["pid"] == sleeper.pid and proc["open"] >= 3
    assert sample["tcp"]["states"]["LISTEN"] == 0  # a fresh namespace, not ours


def test_live_view_refreshes_count_times() -> None:
    out = tcpchurn("watch", "--count", "2", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    assert "closest to full" in out.stdout
    assert out.stderr == ""


def test_json_reader_going_away_ends_the_watch_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpchurn", "watch", "--json", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = json.loads(proc.stdout.readline())
    assert first["where"] == "host"
    proc.stdout.close()  # like `tcpchurn watch --json | head -1`
    assert proc.wait(timeout=10) == 0
    assert proc.stderr.read() == ""


def test_prometheus_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tcpchurn("watch", "--once", "--prometheus", str(port))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [out.stderr.rstrip("\n")]
    assert f"127.0.0.1:{port}" in out.stderr and "another port" in out.stderr


def test_prometheus_addr_binds_the_exporter_where_asked() -> None:
    # A server's exporter must be reachable from the client host (`run --watch-remote`);
    # 127.0.0.2 stands for "an address of this host other than the default".
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpchurn", "watch", "--json", "--interval", "0.2",
         "--count", "50", "--prometheus", str(port), "--prometheus-addr", "127.0.0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        text = scrape_until(f"http://127.0.0.2:{port}/metrics", "tcpchurn_tcp_sockets")
        with pytest.raises(OSError):  # not on the default address any more
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "tcpchurn_tcp_sockets" in text
