"""The lab's faults: sysctls (per namespace and global) and nftables rulesets, journaled.

Each function writes the journal entry (with the previous value) before it changes
anything, so :meth:`Journal.restore` can put the host back.

Scope matters (KERNEL.md section 2): ``nf_conntrack_max`` and ``nf_conntrack_buckets``
are read-only outside the initial namespace (``nf_conntrack_standalone.c``), so the
lab sets them on the host, where they apply to every namespace's own count; everything
else is set inside the lab's namespaces, which start from kernel defaults.
"""

from __future__ import annotations

import re
import subprocess
import tempfile

from tcpchurn.errors import BadValue, TcpchurnError
from tcpchurn.lab.journal import Journal, read_proc, write_proc

CONNTRACK_HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"


def sysctl_rel(name: str) -> str:
    """``net.ipv4.tcp_tw_reuse`` -> ``net/ipv4/tcp_tw_reuse`` (the path under /proc/sys).

    >>> sysctl_rel("net.netfilter.nf_conntrack_max")
    'net/netfilter/nf_conntrack_max'
    """
    if not name or any(part == "" or part == ".." for part in name.split(".")):
        raise BadValue("sysctl", name, "give a dotted name such as net.ipv4.tcp_tw_reuse")
    return name.replace(".", "/")


def set_sysctl(journal: Journal, netns: str | None, name: str, value: str) -> str:
    """Set sysctl ``name`` in ``netns`` (``None``: the host); returns the old value."""
    rel = sysctl_rel(name)
    try:
        old = read_proc(netns, "sys/" + rel)
    except FileNotFoundError as exc:
        raise BadValue("sysctl", name, "this kernel has no such sysctl") from exc
    journal.record("sysctl", netns=netns, key=rel, old=old)
    write_proc(netns, "sys/" + rel, value)
    return old


def set_conntrack_hashsize(journal: Journal, buckets: int) -> str:
    """Resize the global conntrack hash (``nf_conntrack_buckets``); returns the old size.

    Raising ``nf_conntrack_max`` without the buckets only lengthens the hash chains
    (``Documentation/networking/nf_conntrack-sysctl.rst``), so a fix raises both.
    """
    with open(CONNTRACK_HASHSIZE, encoding="ascii") as f:
        old = f.read().strip()
    journal.record("sysfs", path=CONNTRACK_HASHSIZE, old=old)
    with open(CONNTRACK_HASHSIZE, "w", encoding="ascii") as f:
        f.write(str(buckets))
    return old


def load_nft(journal: Journal, netns: str | None, family: str, table: str, body: str) -> None:
    """Load ``table <family> <table> { body }`` with ``nft -f`` inside ``netns``.

    The table is journaled (deleted on restore) before ``nft`` runs.  ``nft -f`` loads a
    file atomically: either the whole table exists afterwards or none of it.
    """
    journal.record("nft_table", netns=netns, family=family, name=table)
    _nft_file(netns, f"table {family} {table} {{\n{body}\n}}\n")


_TABLE = re.compile(r"^\s*table\s+(\w+)\s+(\w+)", re.M)


def load_nft_text(journal: Journal, netns: str | None, text: str) -> None:
    """Load a whole ruleset (e.g. the diagnosis' notrack fix) with ``nft -f``.

    Every ``table FAMILY NAME`` in it is journaled first, so the restore deletes them.
    """
    tables = _TABLE.findall(text)
    if not tables:
        raise TcpchurnError(f"no `table FAMILY NAME` in the nft ruleset:\n{text}")
    for family, name in tables:
        journal.record("nft_table", netns=netns, family=family, name=name)
    _nft_file(netns, text)


def _nft_file(netns: str | None, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".nft", prefix="tcpchurn-") as f:
        f.write(text)
        f.flush()
        argv = ["nft", "-f", f.name]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise TcpchurnError(f"nft -f failed: {out.stderr.strip()}\n{text}")


# A `ct state` expression makes this namespace track connections: without any rule that
# uses conntrack, the module is loaded but creates no entries (KERNEL.md 1.A, verified).
CONNTRACK_RULES = """\
  chain input {
    type filter hook input priority filter; policy accept;
    ct state new counter
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ct state new counter
  }"""


def enable_conntrack(journal: Journal, netns: str) -> None:
    """Make ``netns`` track every connection (a ``ct state new counter`` rule)."""
    load_nft(journal, netns, "inet", "tcpchurn_ct", CONNTRACK_RULES)


# Drop the client's final ACK of the handshake at the server: the server's request sits
# in SYN_RECV (the SYN queue) until SYN-ACK retries run out.  With syncookies off the
# queue is bounded by tcp_max_syn_backlog / the listener backlog (tcp_input.c
# tcp_conn_request -> "drop" when inet_csk_reqsk_queue_is_full).
DROP_FINAL_ACK = """\
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 80 tcp flags & (syn | ack | fin | rst) == ack drop
  }"""


def drop_final_ack(journal: Journal, netns: str) -> None:
    """Drop bare ACKs to port 80 inside ``netns`` (fills the SYN queue)."""
    load_nft(journal, netns, "inet", "tcpchurn_synq", DROP_FINAL_ACK)


# The correct conntrack fix for a benchmark flow: do not track it, in BOTH directions
# (with only the inbound rule the replies still create entries by tcp_loose pickup,
# KERNEL.md 1.A).  Priority raw (-300) runs before conntrack (-200).
NOTRACK_RULES = """\
  chain pre {
    type filter hook prerouting priority raw;
    tcp dport 80 notrack
  }
  chain out {
    type filter hook output priority raw;
    tcp sport 80 notrack
  }"""


def notrack_port80(journal: Journal, netns: str) -> None:
    """Exempt the lab's port-80 flow from conntrack inside ``netns``."""
    load_nft(journal, netns, "inet", "tcpchurn_notrack", NOTRACK_RULES)


def conntrack_values() -> tuple[int, int]:
    """The host's ``(nf_conntrack_max, nf_conntrack_buckets)``."""
    return (
        int(read_proc(None, "sys/net/netfilter/nf_conntrack_max")),
        int(read_proc(None, "sys/net/netfilter/nf_conntrack_buckets")),
    )
