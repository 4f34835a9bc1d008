"""What `tcpchurn run` costs per interval in the parent process (not the load itself).

Each interval the parent takes a client kernel sample, writes and fsyncs one timeline
line and, in a terminal, redraws the dashboard.  This measures each step on the recorded
seed-2009 run (tests/fixtures/runs) and on this machine's live kernel, and the end-of-run
work (summary + diagnosis) for a timeline of N lines.

    python bench/run_overhead.py [--repeat 200] [--lines 3600]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from tcpchurn.kernel.procfs import Procfs
from tcpchurn.report.console import DashboardState, render_dashboard
from tcpchurn.report.files import TimelineWriter, read_summary, read_timeline
from tcpchurn.run_summary import diagnose
from tcpchurn.sampling import Side

RUNS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "runs"


def _times_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--lines", type=int, default=3600, help="timeline length for the end")
    args = ap.parse_args()
    lines = list(read_timeline(RUNS / "seed-2009"))
    summary = read_summary(RUNS / "seed-2009")
    line = lines[-1]
    rows: list[tuple[str, float, float]] = []

    side = Side(Procfs())
    side.sample(detail=False)
    rows.append(("client sample (cheap)", *_times_ms(lambda: side.sample(False), args.repeat)))
    rows.append(("client sample (detail)", *_times_ms(lambda: side.sample(True), args.repeat)))

    with tempfile.TemporaryDirectory() as tmp:
        writer = TimelineWriter(Path(tmp))
        rows.append(("timeline write+fsync", *_times_ms(lambda: writer.write(line), args.repeat)))
        writer.close()

    state = DashboardState(summary["target"], 30.0, summary["environment"]["sysctls"])
    for recorded in lines:
        state.add(recorded)
    console = Console(file=io.StringIO(), width=100)
    rows.append(("dashboard render", *_times_ms(
        lambda: console.print(render_dashboard(state)), args.repeat)))

    long = [dict(lines[i % len(lines)], t=float(i + 1)) for i in range(args.lines)]
    rows.append((f"diagnosis of {args.lines} lines", *_times_ms(
        lambda: diagnose(long, summary), 3)))

    print(f"{'step':<28} {'median ms':>10} {'p99 ms':>10}")
    for name, med, p99 in rows:
        print(f"{name:<28} {med:>10.3f} {p99:>10.3f}")


if __name__ == "__main__":
    main()
