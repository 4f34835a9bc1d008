#!/usr/bin/env python3
"""Forecast vs measured time to exhaustion of ephemeral ports.  (root; a script, not a test)

    python3 bench/forecast_vs_measured.py [--cases 200:100,1000:250,2000:500]

For each ``PORTS:RATE`` case, in a throw-away namespace ``tcpchurn-t-XXXXXX`` (removed
at the end): ``ip_local_port_range`` shrunk to PORTS ports, ``tcp_tw_reuse=0``,
``tcpchurn serve --close client`` on 127.0.0.1 (so the client closes first and holds
TIME_WAIT 60 s), then ``tcpchurn run --close client --rate RATE`` for long enough.  It
prints the doctor's forecast (``seconds_to_full`` of ``ephemeral_ports``) next to the
onset of the run's first finding, and their ratio (DESIGN.md asks for 25%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from tcpchurn.diagnose.forecast import Plan, forecast
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls

PORT = 8080


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def one(ports: int, rate: float) -> tuple[float | None, float | None, str]:
    ns = f"tcpchurn-t-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    server = None
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        ex = ("ip", "netns", "exec", ns)
        sh(*ex, "sysctl", "-qw", f"net.ipv4.ip_local_port_range=40000 {40000 + ports - 1}",
           "net.ipv4.tcp_tw_reuse=0")
        with Procfs(netns=ns) as p:
            sysctls = Sysctls(read_sysctls(p))
        plan = Plan(rate=rate, close="client", loopback=True, lifetime_s=0.0)
        row = next(r for r in forecast(plan, sysctls) if r.limit == "ephemeral_ports")
        server = subprocess.Popen([*ex, sys.executable, "-m", "tcpchurn", "serve", "--port",
                                   str(PORT), "--close", "client"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while f":{PORT:04X} " not in sh(*ex, "cat", "/proc/net/tcp"):
            time.sleep(0.05)
        duration = max(3.0, 1.5 * (row.seconds_to_full or 2.0) + 1)
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([*ex, sys.executable, "-m", "tcpchurn", "run",
                            f"http://127.0.0.1:{PORT}/", "--rate", str(rate), "--duration",
                            str(duration), "--close", "client", "--timeout", "2", "--quiet",
                            "--workers", "1", "--out", out], check=False, timeout=120,
                           capture_output=True)
            summary = json.load(open(os.path.join(out, "summary.json")))
        first = summary["findings"][0] if summary["findings"] else None
        onset = first["onset_s"] if first else None
        return row.seconds_to_full, onset, first["limit"] if first else "(none)"
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=5)
        sh("ip", "netns", "del", ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="200:100,1000:250,2000:500")
    args = ap.parse_args()
    print(f"{'ports':>6} {'rate/s':>7} {'forecast s':>10} {'measured s':>10} "
          f"{'ratio':>6}  first finding")
    for case in args.cases.split(","):
        ports_text, rate_text = case.split(":")
        fc, onset, limit = one(int(ports_text), float(rate_text))
        ratio = f"{onset / fc:.3f}" if fc and onset is not None else "-"
        print(f"{ports_text:>6} {rate_text:>7} {fc!s:>10} {onset!s:>10} {ratio:>6}  {limit}",
              flush=True)


if __name__ == "__main__":
    main()
