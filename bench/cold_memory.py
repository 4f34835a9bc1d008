#!/usr/bin/env python3
"""How much dearer is memory that a process has left alone for a while?

On the project's test VM, touching memory again after a pause costs far more than
warm: a 1 MiB numpy array summed in ~50 us when warm took 1-9 ms after a 0.25 s sleep,
with no page fault counted in the guest (the cost is below it).  The engine is built
around it (docs/run.md "Keeping the schedule"): the C path records latencies in place
instead of folding them with numpy every few ms, and the once-a-second work of an
interval runs in a thread of the worker (load/emitter.py).  This script shows whether a
machine has the effect, and how strongly:

* a 1 MiB array summed twice (cold, then warm) after pauses of 0 to 250 ms;
* the seven latency histograms of one interval encoded (what a worker sends its parent
  every second) right after each other, and after a 1 s pause.

    python3 bench/cold_memory.py [--repeat 5]

Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from tcpchurn.load.stats import HISTOGRAMS, new_histogram, record_many

PAUSES_S = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25)


def timed_us(f: object) -> float:
    start = time.perf_counter()
    f()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="samples per pause")
    args = parser.parse_args()
    array = np.ones(1 << 17)  # 1 MiB
    array.sum()
    print(f"{'pause':>8}  {'1 MiB sum, first (us)':>22}  {'then again (us)':>16}  "
          f"{'minor faults':>12}")
    for pause in PAUSES_S:
        first, again, faults = [], [], 0
        for _ in range(args.repeat):
            time.sleep(pause)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            first.append(timed_us(array.sum))
            again.append(timed_us(array.sum))
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(f"{pause * 1e3:>6.0f}ms  {statistics.median(first):>22,.0f}  "
              f"{statistics.median(again):>16,.0f}  {faults:>12}")
    hists = [new_histogram() for _ in HISTOGRAMS]
    values = np.random.default_rng(1).integers(50, 20_000, 20_000)
    for hist in hists:
        record_many(hist, values)

    def encode_all() -> None:
        for hist in hists:
            hist.encode()

    encode_all()
    warm = [timed_us(encode_all) for _ in range(args.repeat)]
    cold = []
    for _ in range(args.repeat):
        time.sleep(1.0)
        cold.append(timed_us(encode_all))
    print(f"\nseven histograms encoded: {statistics.median(warm) / 1e3:.2f} ms back to back, "
          f"{statistics.median(cold) / 1e3:.2f} ms after a 1 s pause (medians of "
          f"{args.repeat})")


if __name__ == "__main__":
    main()
