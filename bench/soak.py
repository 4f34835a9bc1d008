#!/usr/bin/env python3
"""Is tcpchurn's memory flat with duration?  RSS over time at a sustained rate.

Runs tcpchurn (one worker per CPU) against nginx on loopback at ``--rate`` (default
10,000/s) for ``--minutes`` (default 10), prints the RSS of the parent and of every worker
every ``--every`` seconds, then compares the total after the first minute (the warm-up:
histograms, buffers, interpreter caches) with the total at the end.  The bar: within 5%.

``--stall AT:SECONDS`` (repeatable) stops nginx's workers (SIGSTOP) for SECONDS at AT
seconds into the load, as a stalled server or host would: every connection due meanwhile is
in flight at once, so what tcpchurn holds per connection in flight shows up in the RSS, and
must not stay there for the rest of the run.

As root it runs inside a throw-away network namespace (its TIME_WAIT and ports stay out of
the host's tables); ``--no-netns`` runs on the host's loopback.

    python3 bench/soak.py [--minutes 10] [--rate 10000] [--every 10] [--stall 70:0.5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import here_or_in_netns, nginx, nginx_workers


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def stall_at(text: str) -> tuple[float, float]:
    """``--stall AT:SECONDS``."""
    try:
        at, secs = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give AT:SECONDS, e.g. 70:0.5") from None
    if not (at >= 0 and 0 < secs <= 5):
        raise argparse.ArgumentTypeError(f"{text!r}: AT >= 0, and 0 < SECONDS <= 5")
    return at, secs


def stall_server(at: float, secs: float, t0: float) -> None:
    """Stop the running nginx's workers for ``secs`` at ``at`` seconds after ``t0``."""
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    pids = [pid for pid, _ in nginx_workers()]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(secs)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    print(f"(nginx's workers stopped for {secs:g} s at {at:g} s)", flush=True)


def main_inner(args: argparse.Namespace) -> int:
    from tcpchurn.load.config import LoadConfig, default_workers, parse_target
    from tcpchurn.load.stats import RunTotals
    from tcpchurn.load.workers import WorkerPool

    duration = args.minutes * 60.0
    with tempfile.TemporaryDirectory(prefix="tcpchurn-soak-") as tmp, nginx(Path(tmp)) as url:
        cfg = LoadConfig(target=parse_target(url), rate=args.rate, duration=duration,
                         workers=default_workers(), timeout=2.0).validate()
        totals = RunTotals()
        samples: list[tuple[float, int, list[int]]] = []
        print(f"{args.rate:,.0f}/s for {args.minutes:g} min against {url}, "
              f"{cfg.workers} workers", flush=True)
        print(f"{'t s':>6}{'achieved/s':>12}{'failed':>8}{'late':>7}{'parent KiB':>12}"
              f"{'workers KiB':>28}{'total KiB':>11}", flush=True)
        with WorkerPool(cfg) as pool:
            pool.start()
            t0 = time.monotonic()
            for at, secs in args.stall:
                threading.Thread(target=stall_server, args=(at, secs, t0), daemon=True).start()
            pids = [p.pid for p in pool._procs]
            next_print = 0.0
            for st in pool.intervals():
                totals.add(st)
                t = st.t0 + st.length
                if t + 1e-9 >= next_print and t < duration:  # not while workers exit
                    workers = [rss_kib(pid) for pid in pids]
                    parent = rss_kib(os.getpid())
                    samples.append((t, parent + sum(workers), workers))
                    js = st.to_json()
                    print(f"{t:>6.0f}{js['achieved_rate']:>12,.0f}{js['failed']:>8}"
                          f"{js['late']:>7}{parent:>12,}{' '.join(f'{w:,}' for w in workers):>28}"
                          f"{parent + sum(workers):>11,}", flush=True)
                    next_print = t + args.every
    conns = totals.to_json()["connections"]
    print(f"\nconnections: {conns}")
    warm = [s for s in samples if s[0] >= min(60.0, duration / 2)]
    if len(warm) < 2:
        print("too short to compare (run at least 2 minutes)")
        return 0
    first, last = warm[0], warm[-1]
    growth = 100.0 * (last[1] - first[1]) / first[1]
    verdict = "ok" if abs(growth) <= 5.0 else "GROWS"
    each = ", ".join(f"{a:,} -> {b:,}" for a, b in zip(first[2], last[2], strict=True))
    print(f"workers' RSS, KiB: {each}")
    print(f"RSS total at {first[0]:.0f} s: {first[1]:,} KiB; at {last[0]:.0f} s: "
          f"{last[1]:,} KiB; change {growth:+.2f}% (bar: within 5%) -> {verdict}")
    return 0 if verdict == "ok" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS lines")
    parser.add_argument("--stall", type=stall_at, action="append", default=[],
                        metavar="AT:SECONDS",
                        help="stop nginx's workers for SECONDS at AT s into the load "
                             "(repeatable)")
    here_or_in_netns(parser, main_inner, __file__)


if __name__ == "__main__":
    main()
