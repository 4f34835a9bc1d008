"""`tcpchurn run` against Debian's Apache in a namespace: the 2009 report's tcp6 puzzle.

Apache's `Listen 80` binds a dual-stack [::]:80, so accepted IPv4 connections are IPv6
sockets with ::ffff: addresses; with one request per connection Apache closes first and
holds TIME_WAIT, and those sockets are listed only in tcp6 (KERNEL.md §3).  The run's
own timeline must show exactly that, and agree with `ss`.

Observed while writing this: in a namespace with an IPv4 lab address but no IPv6 one,
Apache binds 0.0.0.0:80 instead (getaddrinfo's AI_ADDRCONFIG does not count ::1), and
the TIME_WAIT sockets are plain IPv4.  The fixture therefore adds an IPv6 lab address.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcpchurn.kernel.procfs import Procfs
from tcpchurn.lab.servers import ServerSpec, apache_conf, server_argv
from tests.conftest import sh
from tests.load.runhelp import consistent, run_tcpchurn


def _listening() -> bool:
    """Does 198.18.0.1:80 accept a connection (run inside the namespace)?"""
    try:
        probe = socket.create_connection(("198.18.0.1", 80), timeout=1)
    except OSError:
        return False
    # Abort with RST: the probe must leave no TIME_WAIT behind to be counted later.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    probe.close()
    return True


@pytest.fixture
def apache_ns(make_netns: Callable[[], str]) -> Iterator[tuple[str, int]]:
    """Apache listening on port 80 of a fresh namespace; yields (netns, pid)."""
    if shutil.which("apache2") is None:
        pytest.skip("apache2 is not installed")
    ns = make_netns()
    sh("ip", "addr", "add", "198.18.0.1/32", "dev", "lo", netns=ns)
    # An IPv6 lab address too: without one, getaddrinfo(AI_ADDRCONFIG) offers Apache only
    # 0.0.0.0 for `Listen 80` (::1 does not count), and the 2009 picture disappears.
    sh("ip", "addr", "add", "fd00:198:18::1/64", "dev", "lo", netns=ns)
    root = tempfile.mkdtemp(prefix="tcpchurn-t-apache-")
    os.chmod(root, 0o755)  # Apache's workers run as www-data and must read htdocs
    for sub in ("htdocs", "run", "logs"):
        os.mkdir(f"{root}/{sub}")
    Path(root, "htdocs", "index.html").write_text("ok\n")
    Path(root, "apache2.conf").write_text(apache_conf(root, backlog=511))
    argv = ["ip", "netns", "exec", ns, *server_argv(ServerSpec(kind="apache"), root)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        with Procfs(netns=ns) as there:
            while not there.call(_listening):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("apache2 did not start: " +
                                         Path(root, "logs", "error.log").read_text())
                time.sleep(0.05)
        yield ns, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.root
def test_apache_time_wait_is_v4_mapped_in_tcp6_and_agrees_with_ss(
    tmp_path: Path, apache_ns: tuple[str, int]
) -> None:
    ns, pid = apache_ns
    done = run_tcpchurn(tmp_path, "http://198.18.0.1/", "--rate", "300", "--duration", "3",
                        "--workers", "2", "--watch-pid", str(pid), netns=ns)
    summary = done.summary
    assert summary["connections"]["attempted"] == summary["connections"]["ok"] == 900
    assert summary["errors"] == {}
    consistent(summary, done.timeline)
    last = done.timeline[-1]
    tcp = last["client"]["tcp"]
    # Every connection went through TIME_WAIT (the namespace is fresh and the fixture's
    # probes end with RST), and one namespace holds both sides.
    assert last["client"]["counters"]["TcpExt"]["TW"] == 900
    # Fewer than 900 may still be there, and the tool must report what is: connect()'s
    # port choice advances table_perturb[] with a lockless READ_ONCE/WRITE_ONCE
    # (net/ipv4/inet_hashtables.c, __inet_hash_connect), so two workers connecting at
    # once can rewind it; the next connect then reuses a port whose TIME_WAIT sits on
    # the server side, which accepts the SYN and drops that TIME_WAIT
    # (tcp_timewait_state_process, TCP_TW_SYN).  Seen on a busy 2-core CI machine:
    # 804 of 900 left.
    tw = last["client"]["sockstat"]["tw"]
    assert 0 < tw <= 900
    assert tcp["states_v4"]["TIME_WAIT"] + tcp["states_v6"]["TIME_WAIT"] == tw
    # None is ours: the client never closed first, so none points at the server's port.
    assert not any(d["remote"] == "198.18.0.1:80" for d in last["client"]["destinations"])
    # The 2009 picture: a dual-stack listener, and every TIME_WAIT an IPv4 peer on an
    # IPv6 socket.
    assert any(q["local"] == "[::]:80" and q["family"] == 6 for q in last["server"]["listen"])
    assert tcp["tw_v4mapped"] == tcp["states_v6"]["TIME_WAIT"] == tw
    # The split by family, and the v4-mapped count, are what ss sees (nothing else runs).
    tw4 = sh("ss", "-4", "-tanH", "state", "time-wait", netns=ns).splitlines()
    tw_all = sh("ss", "-tanH", "state", "time-wait", netns=ns).splitlines()
    assert len(tw_all) == tw
    assert tcp["states_v4"]["TIME_WAIT"] == len(tw4)
    assert tcp["tw_v4mapped"] == sum("::ffff:" in line for line in tw_all)
    assert last["server"]["where"] == f"pid {pid}"
