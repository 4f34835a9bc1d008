"""A kernel-metrics exporter for tests: what `tcpchurn watch --prometheus` serves.

Runs inside a test namespace (``ip netns exec NS python -m tests.report.exporter_helper
ADDR PORT LIFETIME``), samples the namespace's kernel tables with
:class:`~tcpchurn.kernel.snapshot.KernelSnapshot` every 50 ms into
:class:`~tcpchurn.report.prometheus.KernelMetrics`, and serves them on ``ADDR:PORT`` (a lab
address, so the scraper can be in another namespace). It exits by itself after LIFETIME
seconds, so a crashed test cannot leave it behind.
"""

from __future__ import annotations

import os
import sys
import time

from prometheus_client import start_http_server

from tcpchurn.kernel.snapshot import KernelSnapshot
from tcpchurn.report.prometheus import KernelMetrics, make_registry


def main(addr: str, port: int, lifetime: float) -> int:
    """Serve this namespace's kernel sample on ``addr:port`` for ``lifetime`` seconds."""
    registry = make_registry()
    metrics = KernelMetrics(registry, "host")
    start = time.monotonic()
    prev = KernelSnapshot.take(pid=os.getpid(), detail=True, t0=start)
    metrics.update(prev.to_json())
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    print("ready", flush=True)
    while time.monotonic() - start < lifetime:
        time.sleep(0.05)
        snap = KernelSnapshot.take(pid=os.getpid(), detail=True, t0=start)
        metrics.update(snap.to_json(prev))
        prev = snap
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
