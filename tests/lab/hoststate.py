"""A snapshot of everything a lab may change on the host, to compare before and after.

Only state the lab can touch is compared, and only the lab's own names where other
engineers' tests run at the same time (their ``tcpchurn-t-*``/``tcpchurn-bench-*``
namespaces come and go): lab namespaces (``tcpchurn-[csr]-*``), lab links (``tc[cs]-*``).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

SYSCTLS = (
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_buckets",
    "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/tcp_max_tw_buckets",
    "net/ipv4/tcp_syncookies",
    "net/ipv4/tcp_max_syn_backlog",
    "net/ipv4/tcp_fin_timeout",
    "net/ipv4/tcp_timestamps",
    "net/core/somaxconn",
    "net/ipv4/tcp_max_orphans",
    "fs/file-max",
)
HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"
LAB_NETNS = re.compile(r"^tcpchurn-[csr]-")
LAB_LINK = re.compile(r"^\d+: (tc[cs]-[0-9a-f]+)")
JOURNAL = "/run/tcpchurn/journal.jsonl"


@dataclass(frozen=True)
class HostState:
    """The comparable state; equal snapshots mean the lab left nothing behind."""

    sysctls: tuple[tuple[str, str], ...]
    hashsize: str
    lab_netns: tuple[str, ...]
    lab_links: tuple[str, ...]
    nft_ruleset: str
    children: tuple[str, ...]
    lab_processes: tuple[str, ...]
    journal: bool


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _children() -> tuple[str, ...]:
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = _read(f"/proc/{pid}/stat")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z":
            out.append(stat.split(" (", 1)[1].split(")", 1)[0])
    return tuple(sorted(out))


def _lab_processes() -> tuple[str, ...]:
    """Processes whose command line points at a lab temp dir or lab namespace (servers
    orphaned by a killed lab are re-parented to init: not our children any more)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tcpchurn-lab-" in cmd or re.search(r"tcpchurn-[csr]-[0-9a-f]{6}", cmd):
            out.append(cmd.strip())
    return tuple(sorted(out))


def snapshot() -> HostState:
    """Take the snapshot (needs root for nft)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return HostState(
        sysctls=tuple((k, _read(f"/proc/sys/{k}")) for k in SYSCTLS),
        hashsize=_read(HASHSIZE),
        lab_netns=tuple(sorted(n.split()[0] for n in netns.splitlines()
                               if n and LAB_NETNS.match(n))),
        lab_links=tuple(sorted(m.group(1) for m in map(LAB_LINK.match, links.splitlines())
                               if m)),
        nft_ruleset=nft,
        children=_children(),
        lab_processes=_lab_processes(),
        journal=os.path.exists(JOURNAL),
    )
