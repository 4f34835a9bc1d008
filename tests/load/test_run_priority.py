"""``tcpchurn run`` lowers its own priority once its workers run, never theirs.

The parent samples the kernel's tables every interval; with a full TIME_WAIT table a
detail sample is ~170 ms of CPU, and at nice 0 that burst starved nginx mid-run and the
run collapsed (runner.yield_to_load).  Checked on a real run: the parent's threads at
PARENT_NICE, the workers (and the built-in server) at the nice they started with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tcpchurn.runner import PARENT_NICE


def nice_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # proc(5): field 19, "nice"


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def test_the_parent_yields_and_the_workers_do_not(tmp_path: Path) -> None:
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    proc = subprocess.Popen([sys.executable, "-m", "tcpchurn", "run", "--rate", "200",
                             "--duration", "3", "--workers", "2", "--quiet",
                             "--out", str(tmp_path / "run")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the first timeline line: the load runs, and the parent lowered itself before it
        timeline = tmp_path / "run" / "timeline.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                timeline.exists() and timeline.read_text().strip()):
            time.sleep(0.05)
        assert nice_of(proc.pid) == max(mine, PARENT_NICE)
        threads = os.listdir(f"/proc/{proc.pid}/task")
        assert all(nice_of_task(proc.pid, int(t)) == max(mine, PARENT_NICE)
                   for t in threads)
        kids = children_of(proc.pid)
        workers = [k for k in kids if b"workers import _child" in
                   Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(workers) == 2
        assert {nice_of(k) for k in kids} == {mine}  # workers and the built-in server
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()


def nice_of_task(pid: int, tid: int) -> int:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])

