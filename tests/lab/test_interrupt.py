"""Whatever stops a lab, the host ends as it was: Ctrl-C, SIGTERM, and SIGKILL + cleanup.

The lab runs as a real ``tcpchurn lab run`` process; the signal arrives while the load
runs, i.e. while namespaces, nft tables, a lowered global ``nf_conntrack_max``, a server
and the load process all exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.lab.hoststate import HostState, snapshot

pytestmark = [pytest.mark.root, pytest.mark.lab]


def _start_lab(out: Path) -> tuple[subprocess.Popen[str], list[str]]:
    # conntrack-full changes the most: the global nf_conntrack_max, nft in the server ns.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpchurn", "lab", "run", "conntrack-full", "--duration", "20",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    lines: list[str] = []

    def _read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=_read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not any("load:" in x for x in lines):
        assert time.monotonic() < deadline, lines
        assert proc.poll() is None, lines
        time.sleep(0.1)
    time.sleep(2.0)  # mid-run: the table is filling
    return proc, lines


def _changed(before: HostState) -> bool:
    now = snapshot()
    return now.lab_netns != before.lab_netns and now.sysctls != before.sysctls


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_signal_mid_run_restores_the_host(how: str, tmp_path: Path,
                                          host_unchanged: HostState) -> None:
    proc, lines = _start_lab(tmp_path)
    assert _changed(host_unchanged)  # the lab really had changed the host
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the job
    else:
        proc.send_signal(signal.SIGTERM)  # the lab alone, as `kill PID` does
    assert proc.wait(timeout=30) == 130
    assert any(x.endswith("restored the host (7 changes undone)") or "restored the host" in x
               for x in lines), lines


def test_sigkill_then_cleanup_restores_the_host(tmp_path: Path,
                                                host_unchanged: HostState) -> None:
    proc, _ = _start_lab(tmp_path)
    proc.kill()  # no handler runs: namespaces, nft, sysctl, server and load are left
    proc.wait(timeout=10)
    assert _changed(host_unchanged)
    assert snapshot().journal
    out = subprocess.run([sys.executable, "-m", "tcpchurn", "lab", "cleanup"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    undone = out.stdout.splitlines()
    assert "restored net.netfilter.nf_conntrack_max = 262144" in undone
    assert any(x.startswith("deleted network namespace tcpchurn-s-") for x in undone)
    assert any(x.startswith("deleted nft table inet tcpchurn_ct") for x in undone)
    # A second cleanup has nothing left to do.
    again = subprocess.run([sys.executable, "-m", "tcpchurn", "lab", "cleanup"],
                           capture_output=True, text=True, timeout=60)
    assert again.stdout.startswith("nothing to clean up")


def test_next_lab_start_repairs_a_killed_lab(tmp_path: Path,
                                             host_unchanged: HostState) -> None:
    proc, _ = _start_lab(tmp_path / "killed")
    proc.kill()
    proc.wait(timeout=10)
    out = subprocess.run(
        [sys.executable, "-m", "tcpchurn", "lab", "run", "healthy", "--duration", "2",
         "--out", str(tmp_path / "next"), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert "repaired a leftover lab journal" in out.stderr
    assert "first finding: none (expected none)" in out.stderr
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["scenario"], result["ok"], result["before"]["first"]) == ("healthy", True, None)
