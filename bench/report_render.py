#!/usr/bin/env python3
"""How long does `tcpchurn report` take, and how big is the HTML?  (a script, not a test)

    python3 bench/report_render.py [--minutes 10 60] [--interval 1.0] [--rate 2000]

For each length, writes a synthetic run directory (tests/report/make_fixture.py:
``synthetic``, every schema §1-§3 field filled) into a temporary directory, then times
``write_report`` (read + extract + 11 figures + HTML) and reports the HTML size, the
timeline size and the peak RSS of this process. The report must stay < 5 MB and render
in seconds whatever the run's length: plots are down-sampled to ``max_points``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpchurn.report.html import write_report
from tests.report.make_fixture import synthetic, write_run


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--max-points", type=int, default=1000)
    args = ap.parse_args()
    print(f"{'minutes':>8} {'lines':>7} {'timeline MB':>12} {'render s':>9} {'html MB':>8} "
          f"{'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            run = Path(tmp) / f"run-{minutes:g}"
            summary, lines = synthetic(rate=args.rate, duration=int(minutes * 60),
                                       interval=args.interval)
            write_run(run, summary, lines)
            del lines
            t0 = time.perf_counter()
            out = write_report(run, max_points=args.max_points)
            took = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{minutes:>8g} {sum(1 for _ in open(run / 'timeline.jsonl')):>7} "
                  f"{(run / 'timeline.jsonl').stat().st_size / 1e6:>12.1f} {took:>9.2f} "
                  f"{out.stat().st_size / 1e6:>8.2f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
