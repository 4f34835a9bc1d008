"""What the machine looked like when a run started (``environment`` in summary.json, §4).

A run's numbers mean nothing without the limits they ran against: the same 1,000
connections per second stall after 16 s with ``nf_conntrack_max`` = 16384 and never with
262144.  So every summary carries the kernel release, every sysctl KERNEL.md names, the
descriptor limit, the CPU count, the source addresses and whether conntrack is loaded.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Sequence
from typing import Any

from tcpchurn.kernel.procfs import Procfs

# Used only when tcpchurn.kernel.sysctl is not importable (it is the authority on which
# sysctls matter); the names are those of KERNEL.md §7 plus the conntrack limits of §1.A.
_FALLBACK_SYSCTLS = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_mem",
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    "fs.file-max",
    "fs.nr_open",
)


def _fallback_sysctls(procfs: Procfs) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FALLBACK_SYSCTLS:
        text = procfs.read_optional("sys/" + name.replace(".", "/"))
        values[name] = None if text is None else " ".join(text.split())
    return values


def read_sysctl_values(procfs: Procfs) -> dict[str, Any]:
    """Dotted sysctl name -> value (``None`` when absent on this kernel)."""
    try:
        from tcpchurn.kernel.sysctl import read_sysctls
    except ImportError:
        return _fallback_sysctls(procfs)
    snapshot: Any = read_sysctls(procfs)
    values: dict[str, Any] = snapshot.to_json()
    return values


def route_source(host: str, port: int, family: int) -> str | None:
    """The address the kernel would use as source towards ``host`` (no packet is sent).

    ``connect()`` on a UDP socket only runs the route lookup (``ip_route_connect``) and
    fixes the source address; nothing goes on the wire.
    """
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            addr: str = s.getsockname()[0]
            return addr
    except OSError:
        return None


def conntrack_loaded(procfs: Procfs) -> bool:
    """True when the nf_conntrack module is loaded (its sysctls exist)."""
    return procfs.read_optional("sys/net/netfilter/nf_conntrack_max") is not None


def take_environment(
    procfs: Procfs,
    source_ips: Sequence[str] = (),
    target: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    """The ``environment`` object of summary.json (docs/schema.md §4).

    ``source_ips`` are the addresses given with ``--source-ip``; without any, the address
    the kernel routes from towards ``target`` = (host, port, family) is reported.
    """
    sources = list(source_ips)
    if not sources and target is not None:
        found = route_source(*target)
        sources = [found] if found is not None else []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "sysctls": read_sysctl_values(procfs),
        "rlimit_nofile": [soft, hard],
        "source_addresses": sources,
        "conntrack_loaded": conntrack_loaded(procfs),
    }
