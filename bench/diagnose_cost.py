#!/usr/bin/env python3
"""What does diagnose_run cost on a long run?  (a script, not a test)

    python3 bench/diagnose_cost.py [--seconds 3600] [--repeat 5]

Builds a synthetic timeline of ``--seconds`` one-second intervals (tests/diagnose/synth.py,
a healthy run with the server's conntrack table filling at the end) and times
``diagnose_run`` over it, best of ``--repeat``.  The verdict runs once per run, at the
end, so seconds are acceptable; this shows it stays linear in the run's length.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpchurn.diagnose.verdict import diagnose_run
from tests.diagnose.synth import Row, make_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.seconds

    def fill(t: int, row: Row) -> None:
        ct = row["server"]["conntrack"]
        ct.update(active=True, max=n * 900, count=min(1000 * t, n * 900))
        if 1000 * t > n * 900:
            ct["stat_delta"]["drop"] = 500

    timeline, summary = make_run(n, fill)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        verdict = diagnose_run(timeline, summary)
        best = min(best, time.perf_counter() - t0)
    first = verdict.first.limit if verdict.first else None
    print(f"{n} intervals: diagnose_run best of {args.repeat}: {best * 1000:.1f} ms "
          f"({best / n * 1e6:.1f} us per interval); first finding: {first}")


if __name__ == "__main__":
    main()
