"""Every sysctl that limits a sustained rate of new TCP connections, in one snapshot.

The table :data:`SYSCTLS` is the single list (KERNEL.md sections 0, 1, 2 and 7): one row
per sysctl with its dotted name, its ``/proc/sys`` path, its scope on Linux 6.18 and one
line saying what it does for this problem.  The doctor, the diagnosis and the run summary
all read the same rows.

A sysctl this kernel does not have is *absent with a reason*, never an error:

>>> snap = parse_sysctls({"sys/net/ipv4/tcp_fin_timeout": "60\\n",
...                       "sys/net/ipv4/ip_local_port_range": "32768\\t60999\\n"})
>>> snap.get("tcp_fin_timeout"), snap.get("net.ipv4.ip_local_port_range")
(60, (32768, 60999))
>>> snap.entry("tcp_tw_recycle").absent_reason
'removed in Linux 4.12 (commit 4396e46187ca)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs

Scope = Literal["netns", "global", "netns-readonly"]
Kind = Literal["int", "ints", "str"]
Value = int | tuple[int, ...] | str
JsonValue = int | list[int] | str | None

#: Why a conntrack sysctl is missing: they are registered by the module itself
#: (``nf_conntrack_standalone.c`` ``nf_conntrack_standalone_init_sysctl``).
NO_CONNTRACK = "nf_conntrack module not loaded"
#: Why a global sysctl is missing when reading another netns: only ``init_net`` registers
#: them (KERNEL.md section 2), and the reader could not fall back to the host's value.
GLOBAL_ONLY = "global: visible only in the initial network namespace"


@dataclass(frozen=True)
class SysctlSpec:
    """One row of :data:`SYSCTLS`: what tcpchurn knows about a sysctl."""

    name: str  # "net.ipv4.tcp_tw_reuse"
    kind: Kind  # how the text parses: one int, several ints, or free text
    scope: Scope  # on Linux 6.18, checked from a child netns (KERNEL.md section 2)
    meaning: str  # one line: what it does for a connection-rate load
    absent_reason: str = "not present on this kernel"

    @property
    def rel(self) -> str:
        """The path relative to ``/proc``: ``sys/net/ipv4/tcp_tw_reuse``."""
        return "sys/" + self.name.replace(".", "/")

    @property
    def short(self) -> str:
        """The last component: ``tcp_tw_reuse``."""
        return self.name.rsplit(".", 1)[-1]


def _ct(name: str, kind: Kind, scope: Scope, meaning: str) -> SysctlSpec:
    return SysctlSpec(f"net.netfilter.{name}", kind, scope, meaning, NO_CONNTRACK)


def _ct_tcp_timeout(state: str, default: str) -> SysctlSpec:
    return _ct(
        f"nf_conntrack_tcp_timeout_{state}",
        "int",
        "netns",
        f"seconds a conntrack entry lives in TCP state {state} ({default}); "
        "a full table recovers only as entries expire",
    )


# The table.  Scopes were checked on 6.18 from a child netns (KERNEL.md section 2);
# meanings follow Documentation/networking/ip-sysctl.rst and nf_conntrack-sysctl.rst.
SYSCTLS: tuple[SysctlSpec, ...] = (
    # --- TIME_WAIT and ephemeral ports (KERNEL.md 1.B, 1.C, section 7)
    SysctlSpec(
        "net.ipv4.tcp_tw_recycle", "int", "netns",
        "gone; expired TIME_WAIT by per-host timestamps and broke clients behind NAT",
        "removed in Linux 4.12 (commit 4396e46187ca)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_tw_reuse", "int", "netns",
        "0 off, 1 on, 2 loopback only: connect() may reuse a TIME_WAIT 4-tuple "
        "(needs tcp_timestamps; helps only the connecting side)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_tw_reuse_delay", "int", "netns",
        "ms a TIME_WAIT socket must age before tcp_tw_reuse may take it",
        "added in Linux 6.14 (commit ca6a6f93867a); older kernels wait 1 s",
    ),
    SysctlSpec(
        "net.ipv4.tcp_max_tw_buckets", "int", "netns",
        "cap on TIME_WAIT sockets; beyond it sockets close without TIME_WAIT "
        "(TcpExtTCPTimeWaitOverflow)",
    ),
    SysctlSpec(
        "net.ipv4.ip_local_port_range", "ints", "netns",
        "ephemeral ports for connect() per (src ip, dst ip, dst port); "
        "TIME_WAIT holds them 60 s",
    ),
    SysctlSpec(
        "net.ipv4.ip_local_reserved_ports", "str", "netns",
        "ports removed from ip_local_port_range (comma-separated list, empty = none)",
    ),
    SysctlSpec(
        "net.ipv4.ip_autobind_reuse", "int", "netns",
        "1 lets bind(port 0) share ports like connect() does; off by default",
    ),
    SysctlSpec(
        "net.ipv4.tcp_timestamps", "int", "netns",
        "needed by tcp_tw_reuse and PAWS; per-connection random offsets since 4.10",
    ),
    SysctlSpec(
        "net.ipv4.tcp_fin_timeout", "int", "netns",
        "lifetime of orphaned FIN_WAIT2 sockets; does NOT shorten TIME_WAIT (fixed 60 s)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_rfc1337", "int", "netns",
        "1 = TIME_WAIT ignores RST (no TIME_WAIT assassination); no effect on capacity",
    ),
    # --- orphans and memory (KERNEL.md 1.G, 1.H)
    SysctlSpec(
        "net.ipv4.tcp_orphan_retries", "int", "netns",
        "retries before an orphaned FIN_WAIT1/CLOSING/LAST_ACK socket is killed; 0 means 8",
    ),
    SysctlSpec(
        "net.ipv4.tcp_max_orphans", "int", "global",
        "global cap on orphaned sockets; beyond it RST and 'too many orphaned sockets'",
    ),
    SysctlSpec(
        "net.ipv4.tcp_mem", "ints", "global",
        "pages low/pressure/high for all TCP buffers (TcpExtTCPMemoryPressures)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_rmem", "ints", "netns",
        "per-socket receive buffer min/default/max in bytes",
    ),
    SysctlSpec(
        "net.ipv4.tcp_wmem", "ints", "netns",
        "per-socket send buffer min/default/max in bytes",
    ),
    # --- SYN and accept queues (KERNEL.md 1.D, 1.E)
    SysctlSpec(
        "net.ipv4.tcp_max_syn_backlog", "int", "netns",
        "SYN queue bound per listener when syncookies are off",
    ),
    SysctlSpec(
        "net.ipv4.tcp_syncookies", "int", "netns",
        "1 = send syncookies when a SYN queue overflows (TcpExtSyncookiesSent)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_abort_on_overflow", "int", "netns",
        "1 = RST instead of dropping the ACK when the accept queue is full",
    ),
    SysctlSpec(
        "net.ipv4.tcp_syn_retries", "int", "netns",
        "SYN retransmissions before connect() fails with ETIMEDOUT (6 = about 127 s)",
    ),
    SysctlSpec(
        "net.ipv4.tcp_synack_retries", "int", "netns",
        "SYN-ACK retransmissions for a half-open connection on the server",
    ),
    SysctlSpec(
        "net.core.somaxconn", "int", "netns",
        "cap on every listen() backlog (4096 since 5.4, commit 19f92a030ca6)",
    ),
    SysctlSpec(
        "net.core.netdev_max_backlog", "int", "global",
        "per-CPU input backlog (also loopback); drops in softnet_stat column 2",
    ),
    SysctlSpec(
        "net.core.rmem_default", "int", "netns-readonly",
        "default socket receive buffer (bytes) when tcp_rmem does not apply",
    ),
    SysctlSpec(
        "net.core.rmem_max", "int", "netns-readonly",
        "cap on SO_RCVBUF (bytes)",
    ),
    SysctlSpec(
        "net.core.wmem_default", "int", "netns-readonly",
        "default socket send buffer (bytes) when tcp_wmem does not apply",
    ),
    SysctlSpec(
        "net.core.wmem_max", "int", "netns-readonly",
        "cap on SO_SNDBUF (bytes)",
    ),
    SysctlSpec(
        "net.core.message_cost", "int", "global",
        "net_ratelimit: seconds per message; every net_*_ratelimited log shares it",
    ),
    SysctlSpec(
        "net.core.message_burst", "int", "global",
        "net_ratelimit burst; kernel log lines are hints, counters are the evidence",
    ),
    SysctlSpec(
        "net.ipv6.bindv6only", "int", "netns",
        "0 = a [::] listener also accepts IPv4 (IPv4-mapped sockets appear in tcp6)",
    ),
    # --- the established hash
    SysctlSpec(
        "net.ipv4.tcp_ehash_entries", "int", "netns-readonly",
        "size of the TCP established hash; negative = shared with the host",
    ),
    SysctlSpec(
        "net.ipv4.tcp_child_ehash_entries", "int", "netns",
        "ehash size for netns created afterwards; 0 = share the host's",
    ),
    # --- conntrack (KERNEL.md 1.A)
    _ct(
        "nf_conntrack_max", "int", "netns-readonly",
        "entries per netns (global value, writable only in the init netns)",
    ),
    _ct(
        "nf_conntrack_buckets", "int", "netns-readonly",
        "conntrack hash size; raise it together with nf_conntrack_max",
    ),
    _ct(
        "nf_conntrack_expect_max", "int", "netns-readonly",
        "cap on expectations (helpers such as FTP); not a rate limit",
    ),
    _ct(
        "nf_conntrack_tcp_loose", "int", "netns",
        "1 = pick up mid-stream TCP flows (creates entries for untracked replies)",
    ),
    _ct(
        "nf_conntrack_tcp_be_liberal", "int", "netns",
        "1 = only out-of-window RSTs are marked INVALID",
    ),
    _ct_tcp_timeout("syn_sent", "120 s"),
    _ct_tcp_timeout("syn_recv", "60 s"),
    _ct_tcp_timeout("established", "432000 s"),
    _ct_tcp_timeout("fin_wait", "120 s"),
    _ct_tcp_timeout("close_wait", "60 s"),
    _ct_tcp_timeout("last_ack", "30 s"),
    _ct_tcp_timeout("time_wait", "120 s: a cleanly closed connection holds its entry this long"),
    _ct_tcp_timeout("close", "10 s: connections ended by RST"),
    _ct_tcp_timeout("max_retrans", "300 s"),
    _ct_tcp_timeout("unacknowledged", "300 s"),
    # --- file descriptors (KERNEL.md 1.I)
    SysctlSpec(
        "fs.file-max", "int", "global",
        "system-wide open files; beyond it ENFILE and 'VFS: file-max limit N reached'",
    ),
    SysctlSpec(
        "fs.nr_open", "int", "global",
        "ceiling for RLIMIT_NOFILE (EMFILE comes from the process limit)",
    ),
)

_BY_NAME: dict[str, SysctlSpec] = {}
for _spec in SYSCTLS:
    _BY_NAME[_spec.name] = _spec
    _BY_NAME[_spec.short] = _spec
    _BY_NAME[_spec.rel] = _spec


def spec(name: str) -> SysctlSpec:
    """The table row for a dotted name, a short name or a ``sys/...`` path.

    Raises ``KeyError`` naming the value for a sysctl that is not in the table.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a sysctl tcpchurn knows (see SYSCTLS)") from None


@dataclass(frozen=True)
class SysctlValue:
    """One sysctl as read: its value, or ``None`` and the reason it is absent."""

    name: str
    value: Value | None
    scope: Scope
    absent_reason: str | None
    meaning: str

    @property
    def present(self) -> bool:
        """True when the kernel has this sysctl."""
        return self.value is not None


@dataclass(frozen=True)
class SysctlSnapshot:
    """Every sysctl of :data:`SYSCTLS`, read at one instant in one namespace."""

    entries: tuple[SysctlValue, ...]

    def entry(self, name: str) -> SysctlValue:
        """The :class:`SysctlValue` for a dotted or short name."""
        wanted = spec(name).name
        for e in self.entries:
            if e.name == wanted:
                return e
        raise KeyError(f"{name!r} was not read in this snapshot")

    def get(self, name: str) -> Value | None:
        """The value of ``net.ipv4.tcp_tw_reuse`` (or ``tcp_tw_reuse``); None if absent."""
        return self.entry(name).value

    def to_json(self) -> dict[str, JsonValue]:
        """Dotted name -> value (lists for ranges), ``None`` for absent sysctls."""
        return {e.name: list(e.value) if isinstance(e.value, tuple) else e.value
                for e in self.entries}


def parse_value(kind: Kind, text: str, path: str) -> Value:
    """Parse the text of one ``/proc/sys`` file.

    >>> parse_value("ints", "4096\\t131072\\t33554432\\n", "/proc/sys/net/ipv4/tcp_rmem")
    (4096, 131072, 33554432)
    """
    stripped = text.strip()
    if kind == "str":
        return stripped
    fields = stripped.split()
    try:
        numbers = tuple(int(f) for f in fields)
    except ValueError:
        raise ParseError(path, 1, text.rstrip("\n"), "expected integers") from None
    if kind == "int":
        if len(numbers) != 1:
            raise ParseError(path, 1, text.rstrip("\n"), "expected one integer")
        return numbers[0]
    if not numbers:
        raise ParseError(path, 1, text.rstrip("\n"), "expected integers")
    return numbers


def parse_sysctls(
    files: Mapping[str, str | None],
    *,
    global_reason: str | None = None,
) -> SysctlSnapshot:
    """Build a snapshot from ``{"sys/net/ipv4/tcp_fin_timeout": "60\\n", ...}``.

    A row whose path is missing from ``files`` (or maps to ``None``) is absent with the
    row's reason.  ``global_reason`` overrides the reason for absent global sysctls (used
    when a child netns was read and no host value was available).
    """
    entries: list[SysctlValue] = []
    for row in SYSCTLS:
        text = files.get(row.rel)
        if text is None:
            reason = row.absent_reason
            if row.scope == "global" and global_reason is not None:
                reason = global_reason
            entries.append(SysctlValue(row.name, None, row.scope, reason, row.meaning))
            continue
        value = parse_value(row.kind, text, "/proc/" + row.rel)
        entries.append(SysctlValue(row.name, value, row.scope, None, row.meaning))
    return SysctlSnapshot(tuple(entries))


def read_sysctls(procfs: Procfs | None = None) -> SysctlSnapshot:
    """Read every sysctl of :data:`SYSCTLS` in ``procfs``'s namespace.

    Global sysctls (``tcp_mem``, ``tcp_max_orphans``, ``netdev_max_backlog``) exist only in
    the initial netns (KERNEL.md section 2); when reading another live namespace they are
    taken from our own, where the same global value is visible.
    """
    procfs = procfs if procfs is not None else Procfs()
    files = {row.rel: procfs.read_optional(row.rel) for row in SYSCTLS}
    missing_global = [r.rel for r in SYSCTLS if r.scope == "global" and files[r.rel] is None]
    reason: str | None = None
    if missing_global and procfs.is_live and (procfs.netns is not None or procfs.pid is not None):
        host = Procfs()
        for rel in missing_global:
            files[rel] = host.read_optional(rel)
        reason = GLOBAL_ONLY
    return parse_sysctls(files, global_reason=reason)
