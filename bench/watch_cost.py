#!/usr/bin/env python3
"""What does watching cost with 100,000 TIME_WAIT sockets?  (root; a script, not a test)

    python3 bench/watch_cost.py [--sockets 100000] [--repeat 7]

Creates a throw-away namespace ``tcpchurn-bench-XXXXXX`` with loopback only, raises its
``tcp_max_tw_buckets``, and fills it with TIME_WAIT sockets: IPv4 clients connect to a
server on 127.0.0.2..127.0.0.51 (50 destinations, so the 4-tuples never repeat),
the server closes first, so the *server* side holds TIME_WAIT (KERNEL.md §3).  Then it
measures, best of ``--repeat``, through ``Procfs(netns=...)`` as ``tcpchurn watch
--netns`` does:

* the per-second sample: sockstat + counters + conntrack + LISTEN-only sock_diag, piece
  by piece and through ``KernelSnapshot.take`` when that module exists (bar: < 1 ms);
* full dumps through sock_diag (TIME_WAIT only, all states, destinations), against
  ``ss -tan state time-wait | wc -l`` in the same namespace in the same run (bar: faster).

The namespace (and with it every socket) is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tcpchurn.kernel import sockdiag
from tcpchurn.kernel.procfs import Procfs

DESTINATIONS = [f"127.0.0.{i}" for i in range(2, 52)]
PORT = 8080
BATCH = 500


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def fill_time_wait(total: int) -> int:
    """Runs *inside* the namespace: create ``total`` server-side TIME_WAIT sockets."""
    listeners = []
    for host in DESTINATIONS:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((host, PORT))
        lst.listen(4096)
        listeners.append(lst)
    made = 0
    try:
        while made < total:
            for host, lst in zip(DESTINATIONS, listeners, strict=True):
                n = min(BATCH, total - made)
                if n <= 0:
                    break
                clients = []
                for _ in range(n):
                    c = socket.socket()
                    c.setblocking(False)
                    rc = c.connect_ex((host, PORT))
                    if rc not in (0, errno.EINPROGRESS):
                        raise OSError(rc, f"connect to {host}:{PORT}: {os.strerror(rc)}")
                    clients.append(c)
                for _ in range(n):
                    conn, _ = lst.accept()
                    conn.close()  # the server closes first: it will hold TIME_WAIT
                for c in clients:
                    c.close()  # FIN in CLOSE_WAIT -> LAST_ACK -> CLOSED; server -> TIME_WAIT
                made += n
    finally:
        for lst in listeners:
            lst.close()
    return made


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """The fastest of ``repeat`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def sockstat_tw(procfs: Procfs) -> int:
    for line in procfs.read("net/sockstat").splitlines():
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("tw") + 1])
    return 0


def per_second_pieces(procfs: Procfs) -> dict[str, Callable[[], Any]]:
    """The readers of one per-second sample that exist in this tree."""
    pieces: dict[str, Callable[[], Any]] = {}
    try:
        from tcpchurn.kernel.sockstat import read_sockstat

        pieces["sockstat"] = lambda: read_sockstat(procfs)
    except ImportError:
        pieces["sockstat (raw read)"] = lambda: procfs.read("net/sockstat")
    try:
        from tcpchurn.kernel.counters import read_counters

        pieces["counters"] = lambda: read_counters(procfs)
    except ImportError:
        pieces["counters (raw read)"] = lambda: (
            procfs.read("net/netstat"),
            procfs.read("net/snmp"),
        )
    try:
        from tcpchurn.kernel.conntrack import read_conntrack

        pieces["conntrack"] = lambda: read_conntrack(procfs)
    except ImportError:
        pieces["conntrack (raw read)"] = lambda: procfs.read_optional("net/stat/nf_conntrack")
    pieces["sock_diag LISTEN"] = lambda: sockdiag.listeners(procfs)
    return pieces


def ss_cmd(ns: str, shell: str) -> Callable[[], Any]:
    return lambda: subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", shell], check=True, capture_output=True
    )


def measure_inside(repeat: int) -> None:
    """Child mode: this process runs in the namespace; print per-second costs as JSON."""
    procfs = Procfs()
    out = {name: best_of(repeat * 3, fn) for name, fn in per_second_pieces(procfs).items()}
    try:
        from tcpchurn.kernel.snapshot import KernelSnapshot

        take = lambda: KernelSnapshot.take(procfs, detail=False, states=False)  # noqa: E731
        out["take(states=False)"] = best_of(repeat * 3, take)
    except ImportError:
        pass
    print(json.dumps(out))


def main() -> None:
    """Build, measure, print, clean up."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--measure-inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_inside:
        measure_inside(args.repeat)
        return
    if os.geteuid() != 0:
        sys.exit("watch_cost: needs root (it creates a network namespace)")

    ns = f"tcpchurn-bench-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    rows: list[tuple[str, float, str, float | None]] = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # per-netns sysctls (KERNEL.md §2): gone with the namespace
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            f"net.ipv4.tcp_max_tw_buckets={args.sockets * 2}",
        )
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
        with Procfs(netns=ns) as procfs:
            t0 = time.perf_counter()
            made = procfs.call(lambda: fill_time_wait(args.sockets))
            built = time.perf_counter() - t0
            tw = sockstat_tw(procfs)
            print(f"built {made:,} connections in {built:.1f} s; sockstat tw = {tw:,}")
            if tw < args.sockets * 0.99:
                sys.exit(f"watch_cost: only {tw:,} TIME_WAIT sockets, wanted {args.sockets:,}")

            # The per-second sample, piece by piece.
            pieces = per_second_pieces(procfs)
            total = 0.0
            for name, fn in pieces.items():
                ms = best_of(args.repeat * 3, fn)
                total += ms
                rows.append((f"per-second: {name}", ms, "", None))
            rows.append(("per-second: sum of pieces", total, "bar < 1 ms", None))
            try:
                from tcpchurn.kernel.snapshot import KernelSnapshot

                # What `tcpchurn watch` takes every interval (kernel/watcher.py) ...
                ms = best_of(
                    args.repeat * 3,
                    lambda: KernelSnapshot.take(procfs, detail=False, states=False),
                )
                rows.append(("per-second: take(states=False)", ms, "bar < 1 ms", None))
                # ... and the default take(): every state but TIME_WAIT walks the ehash.
                ms = best_of(args.repeat, lambda: KernelSnapshot.take(procfs, detail=False))
                rows.append(("take(detail=False) (+ehash walk)", ms, "", None))
            except ImportError:
                rows.append(("per-second: KernelSnapshot.take", float("nan"), "not in tree", None))
            # The same from a process that lives in the namespace (`ip netns exec NS
            # tcpchurn watch`): no hop to the Procfs namespace thread per file.
            inside = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    sys.executable,
                    os.path.abspath(__file__),
                    "--measure-inside",
                    "--repeat",
                    str(args.repeat),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            for name, ms in json.loads(inside.stdout).items():
                rows.append(
                    (f"inside netns: {name}", ms, "bar < 1 ms" if "take" in name else "", None)
                )

            # Full dumps against ss in the same namespace.
            ss_tw = best_of(args.repeat, ss_cmd(ns, "ss -tan state time-wait | wc -l"))
            ss_all = best_of(args.repeat, ss_cmd(ns, "ss -tan | wc -l"))
            ss_s = best_of(args.repeat, ss_cmd(ns, "ss -s"))
            shell = best_of(args.repeat, ss_cmd(ns, "true"))
            ours_tw = best_of(args.repeat, lambda: sockdiag.tcp_states(procfs, ["TIME_WAIT"]))
            ours_all = best_of(args.repeat, lambda: sockdiag.tcp_states(procfs))
            ours_dest = best_of(args.repeat, lambda: sockdiag.destinations(procfs))
            ours_both = best_of(args.repeat, lambda: sockdiag.states_and_destinations(procfs))
            rows.append(
                ("sock_diag TIME_WAIT count", ours_tw, "ss -tan state time-wait|wc -l", ss_tw)
            )
            rows.append(("sock_diag all states count", ours_all, "ss -tan | wc -l", ss_all))
            rows.append(("sock_diag destinations (top 10)", ours_dest, "ss -tan | wc -l", ss_all))
            rows.append(("sock_diag states + destinations", ours_both, "ss -tan | wc -l", ss_all))
            rows.append(("(for scale) ip netns exec sh -c true", shell, "ss -s", ss_s))
            states = sockdiag.tcp_states(procfs, ["TIME_WAIT"])
            print(f"sock_diag counted {states.total['TIME_WAIT']:,} TIME_WAIT sockets")
    finally:
        sh("ip", "netns", "del", ns)

    w = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{w}}  {'ms':>9}  {'peer':<31} {'peer ms':>9}  {'ratio':>6}")
    for name, ms, peer, peer_ms in rows:
        ratio = f"{peer_ms / ms:5.1f}x" if peer_ms and ms == ms and ms > 0 else ""
        peer_txt = f"{peer_ms:9.2f}" if peer_ms is not None else ""
        print(f"{name:<{w}}  {ms:9.3f}  {peer:<31} {peer_txt:>9}  {ratio:>6}")
    print(
        "\nratio = peer time / our time (higher is better for us); ss figures include "
        "starting ip+sh+ss (see the `sh -c true` row)."
    )


if __name__ == "__main__":
    main()
