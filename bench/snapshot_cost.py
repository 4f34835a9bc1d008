#!/usr/bin/env python3
"""What does one KernelSnapshot cost, by option, as TIME_WAIT grows?  (root; not a test)

    python3 bench/snapshot_cost.py [--steps 0,10000,50000] [--repeat 7]

In a throw-away namespace ``tcpchurn-bench-XXXXXX`` (removed at the end) it adds
server-side TIME_WAIT sockets step by step (bench/watch_cost.py's ``fill_time_wait``)
and times, best of ``--repeat``, ``KernelSnapshot.take`` as ``tcpchurn watch --netns``
calls it:

* ``take()``              the per-second default: sockstat, counters, conntrack, softnet,
                          fds, LISTEN dump and the non-TIME_WAIT state dump;
* ``take(states=False)``  without the state dump (only LISTEN and TIME_WAIT known);
* ``take(detail=True)``   full dumps by family + destinations (on demand);
* ``take(proc_net_tcp=True)``  plus the 2009 report's /proc/net/tcp{,6} count.

The state dumps walk the whole established hash, shared by every namespace, so their
cost grows with the TIME_WAIT sockets even when the filter excludes them (KERNEL.md §4).

The TIME_WAIT sockets are a server's (as on loopback in ``tcpchurn run`` against a
server beside it), so a listener stays open on their port while the snapshots are
timed: a full sample leaves a listener's own sockets out of the destinations
(sockdiag.listener_ports), and without it each became a destination of its own
(100 ms at 130,000 instead of ~45).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import uuid
from functools import partial
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from watch_cost import DESTINATIONS, PORT, best_of, fill_time_wait

from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.snapshot import KernelSnapshot


def listen_on(host: str, port: int) -> socket.socket:
    """A listener on the TIME_WAIT sockets' port (made inside the namespace)."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(16)
    return lst


def main() -> None:
    """Build step by step, measure, print, clean up."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", default="0,10000,50000")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if os.geteuid() != 0:
        sys.exit("snapshot_cost: needs root (it creates a network namespace)")
    ns = f"tcpchurn-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "-n", ns, "link", "set", "lo", "up"],
                    ["ip", "netns", "exec", ns, "sysctl", "-qw",
                     f"net.ipv4.tcp_max_tw_buckets={max(steps) * 2 + 1}"],
                    ["ip", "netns", "exec", ns, "sysctl", "-qw",
                     "net.ipv4.ip_local_port_range=1024 65535"]):
            subprocess.run(cmd, check=True, capture_output=True)
        variants: dict[str, dict[str, Any]] = {
            "take()": {},
            "take(states=False)": {"states": False},
            "take(detail=True)": {"detail": True},
            "take(proc_net_tcp=True)": {"proc_net_tcp": True},
        }
        print(f"{'TIME_WAIT':>10}  " + "  ".join(f"{v:>24}" for v in variants))
        with Procfs(netns=ns) as procfs:
            have = 0
            for want in steps:
                if want > have:
                    procfs.call(partial(fill_time_wait, want - have))
                    have = want
                listener = procfs.call(partial(listen_on, DESTINATIONS[0], PORT))
                tw = KernelSnapshot.take(procfs).sockstat.tw
                cells = []
                for kw in variants.values():
                    ms = best_of(args.repeat, partial(KernelSnapshot.take, procfs, **kw))
                    cells.append(f"{ms:21.3f} ms")
                listener.close()
                print(f"{tw:>10,}  " + "  ".join(cells))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
