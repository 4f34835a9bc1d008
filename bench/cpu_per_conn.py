#!/usr/bin/env python3
"""CPU per connection: tcpchurn's C path, its Python path, and wrk, one thread each.

On loopback the generator and the server share the CPU, so what the generator spends
per connection is taken from the server: this is the figure behind tcpchurn's ceiling
next to wrk's (bench/ceiling.py).  Each load runs alone in one thread against nginx
(generated config, as bench/ceiling.py) for ``--secs``; user and system CPU come from
the kernel's rusage of that thread's process, divided by the connections made:

* ``wrk -t1 -c32 -H 'Connection: close'`` (closed loop, its best single-thread rate);
* tcpchurn's engine in this process, one worker, a target rate above what it can reach
  (``--rate``), ``TCPCHURN_ENGINE=c`` and ``=python`` in turn.

``--mode tcp`` measures bare connections instead (the two tcpchurn paths only: wrk has
no such mode), closed with RST (``--close reset``): nginx waits for a request from a
silent client, so it cannot close first, and a client closing first on loopback leaves
each port in TIME_WAIT for 60 s, so connect() soon spends ~100 µs searching the
ephemeral range for a port (KERNEL.md §B) and measures the kernel, not the generator.

Rounds alternate (``--rounds``) and every value is printed: the machine may be shared.

    python3 bench/cpu_per_conn.py [--rounds 3] [--secs 5] [--rate 100000] [--mode tcp]
                                  [--no-netns]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import here_or_in_netns, nginx


def wrk_one_thread(url: str, secs: float) -> tuple[float, float, float]:
    """(connections/s, user µs, system µs per connection) of ``wrk -t1 -c32``."""
    proc = subprocess.Popen(["wrk", "-t1", "-c32", f"-d{secs:g}s", "-H", "Connection: close",
                             url], stdout=subprocess.PIPE, text=True)
    _pid, _status, ru = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    m = re.search(r"Requests/sec:\s+([\d.]+)", proc.stdout.read())
    if m is None:
        sys.exit("wrk printed no rate: is it installed (apt-get install wrk)?")
    rate = float(m.group(1))
    n = rate * secs
    return rate, ru.ru_utime / n * 1e6, ru.ru_stime / n * 1e6


def tcpchurn_one_worker(url: str, secs: float, rate: float, kind: str,
                        mode: str = "http") -> tuple[float, float, float]:
    """The same for tcpchurn's engine in this process, on the path ``kind``."""
    from tcpchurn.load.config import LoadConfig, parse_target
    from tcpchurn.load.engine import Engine
    from tcpchurn.load.pump import ENV
    from tcpchurn.load.stats import IntervalStats, RunTotals

    os.environ[ENV] = kind
    cfg = LoadConfig(target=parse_target(url), rate=rate, duration=secs, workers=1,
                     timeout=2.0, max_inflight=64, mode="tcp" if mode == "tcp" else "http",
                     close="reset" if mode == "tcp" else "server").validate()
    totals = RunTotals()

    def record(st: IntervalStats) -> None:
        totals.add(st)

    engine = Engine(cfg, record)
    assert engine.kind == kind, f"asked for the {kind} path, got {engine.kind}"
    before = resource.getrusage(resource.RUSAGE_SELF)
    engine.run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    ok = max(totals.ok, 1)
    return (ok / secs, (after.ru_utime - before.ru_utime) / ok * 1e6,
            (after.ru_stime - before.ru_stime) / ok * 1e6)


def main_inner(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tcpchurn-bench-") as tmp, nginx(Path(tmp)) as url:
        mode = args.mode
        print(f"nginx at {url}; {args.secs:g} s each, one thread; --mode {mode}", flush=True)
        print(f"{'load':<28}{'conn/s':>10}{'user µs':>10}{'sys µs':>10}")
        for r in range(args.rounds):
            runs: list[tuple[str, Callable[[], tuple[float, float, float]]]] = [
                ("tcpchurn, C path",
                 lambda: tcpchurn_one_worker(url, args.secs, args.rate, "c", mode)),
                ("tcpchurn, Python path",
                 lambda: tcpchurn_one_worker(url, args.secs, args.rate, "python", mode)),
            ]
            if mode == "http":
                runs.insert(0, ("wrk -t1 -c32", lambda: wrk_one_thread(url, args.secs)))
            for label, run in runs:
                rate, user, system = run()
                print(f"{label + f' #{r + 1}':<28}{rate:>10,.0f}{user:>10.2f}{system:>10.2f}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--secs", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100_000.0,
                        help="tcpchurn's target: above what one worker reaches")
    parser.add_argument("--mode", choices=("http", "tcp"), default="http",
                        help="tcp: bare connections, closed with RST (the module says why)")
    here_or_in_netns(parser, main_inner, __file__)


if __name__ == "__main__":
    main()
