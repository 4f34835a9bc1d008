"""Does the `tcpchurn run` parent grow with the duration?  (DESIGN.md: memory flat.)

Runs `tcpchurn run` against the built-in server and samples VmRSS of the parent (and of
worker 0) once a second; prints the first, middle and last values.

    python bench/run_memory.py --rate 500 --duration 30

Measured 2026-11-27 on the 2-core CI machine (shared, load average ~6), 500/s, 30 s:
parent RSS 61.7 MB at 6 s -> 72.6 MB at 26 s.  tracemalloc inside the parent shows the
live Python heap flat (18.21 MB at 5 s, 18.21 MB at 24 s): the RSS rise is the peak of
the per-destination sock_diag dump (every few intervals), which grows with the TIME_WAIT
population and so plateaus once TIME_WAIT does (60 s).  Nothing is kept per interval.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB, ``None`` once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (workers, the built-in server)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", default="500")
    ap.add_argument("--duration", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tcpchurn", "run", "--rate", args.rate, "--duration",
             str(args.duration), "--quiet", "--out", f"{tmp}/run"],
        )
        samples: list[tuple[float, int, list[int]]] = []
        t0 = time.monotonic()
        while proc.poll() is None:
            parent = rss_kb(proc.pid)
            kids = [r for r in (rss_kb(c) for c in children(proc.pid)) if r is not None]
            if parent is not None:
                samples.append((time.monotonic() - t0, parent, kids))
            time.sleep(1.0)
        print(f"exit {proc.returncode}; {len(samples)} samples")
        print(f"{'t s':>6} {'parent kB':>10}  children kB")
        for t, parent, kids in samples[1:: max(1, len(samples) // 6)]:
            print(f"{t:6.1f} {parent:10d}  {kids}")


if __name__ == "__main__":
    main()
