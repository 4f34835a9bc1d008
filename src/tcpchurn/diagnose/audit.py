"""The doctor's audit: one true sentence about each sysctl that matters, for this plan.

Users ask about the 2009 report's list (KERNEL.md §7) first, so every one of those is
here, ``tcp_tw_recycle`` included (absent, and why), followed by the other limits the
forecast reads.  Each note is computed from the value in force and the plan's rate, so
it says what this value means for this load, not what the sysctl is in general.

>>> from tcpchurn.kernel.sysctl import parse_sysctls
>>> snap = parse_sysctls({"sys/net/ipv4/tcp_fin_timeout": "60\\n"})
>>> [e.note for e in audit(snap, Plan(rate=1000)) if e.sysctl.endswith("fin_timeout")][0][:40]
'60 s for orphaned FIN_WAIT2 sockets only'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tcpchurn.diagnose.forecast import TW_LEN_S, Plan, port_count, tuple_bound, tw_reuse_active
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.kernel.sysctl import SysctlSnapshot


@dataclass(frozen=True)
class AuditEntry:
    """One sysctl, its value and scope, and what it means for the plan."""

    sysctl: str
    value: Any
    scope: str  # "netns", "global", "netns-readonly", or "absent"
    note: str

    def to_json(self) -> dict[str, Any]:
        """docs/schema.md §6 ``audit`` entry."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"sysctl": self.sysctl, "value": value, "scope": self.scope, "note": self.note}


Note = Callable[[Any, Sysctls, Plan], str]


def _recycle(v: Any, s: Sysctls, p: Plan) -> str:
    if v is None:
        return ("absent: removed in Linux 4.12 (commit 4396e46187ca); it expired TIME_WAIT "
                "by per-host timestamps and broke clients behind NAT. Never set it.")
    return (f"{v}: this kernel predates 4.12; keep it 0, it breaks clients behind NAT and, "
            "with per-connection timestamp offsets (4.10), everyone")


def _reuse(v: Any, s: Sysctls, p: Plan) -> str:
    ports = port_count(s)
    meaning = {0: "off: connect() never reuses a TIME_WAIT port",
               1: "on: connect() reuses a TIME_WAIT port after tcp_tw_reuse_delay",
               2: "loopback only (default): a loopback test reuses ports, a remote one does "
                  "not"}.get(v, f"{v}")
    tail = " (needs tcp_timestamps, which are off here)" if s.int("tcp_timestamps") == 0 else ""
    if p.close == "client":
        active = tw_reuse_active(p, s)
        ceiling = ports / 1.0 if active else ports // TW_LEN_S
        tail += (f"; with the client closing first this plan's ceiling is about "
                 f"{ceiling:,.0f}/s per destination tuple")
    else:
        tail += "; only the connecting side benefits, and only when it closes first"
    return meaning + tail


def _max_tw(v: Any, s: Sysctls, p: Plan) -> str:
    if v is None:
        return "unknown"
    # One TIME_WAIT socket per 4-tuple at most: a new SYN takes over its tuple's socket.
    need = min(p.rate * TW_LEN_S, float(tuple_bound(p, s)))
    verdict = "fits" if need <= v else "overflows (TcpExtTCPTimeWaitOverflow; mostly harmless)"
    return (f"cap on TIME_WAIT sockets ({v // TW_LEN_S:,.0f}/s sustained); the side closing "
            f"first holds min({p.rate:g}/s x 60 s, 4-tuples) = {need:,.0f}: {verdict}. "
            "Never lower it")


def _range(v: Any, s: Sysctls, p: Plan) -> str:
    ports = port_count(s)
    return (f"{ports:,} usable ports per (src ip, dst ip, dst port); {ports // TW_LEN_S:,.0f}/s "
            f"per destination when the client closes first without tcp_tw_reuse")


def _timestamps(v: Any, s: Sysctls, p: Plan) -> str:
    if v == 0:
        return "off: tcp_tw_reuse cannot prove a new connection is newer, so it does nothing"
    return "on: tcp_tw_reuse and PAWS can work (per-connection random offsets since 4.10)"


def _fin_timeout(v: Any, s: Sysctls, p: Plan) -> str:
    return (f"{v} s for orphaned FIN_WAIT2 sockets only; it does NOT shorten TIME_WAIT, "
            "which is fixed at 60 s")


def _orphan_retries(v: Any, s: Sysctls, p: Plan) -> str:
    n = 8 if v == 0 else v
    return (f"{v}: an orphaned FIN_WAIT1/CLOSING/LAST_ACK socket is killed after {n} "
            "retries" + (" (0 means 8)" if v == 0 else ""))


def _rfc1337(v: Any, s: Sysctls, p: Plan) -> str:
    return (f"{v}: {'TIME_WAIT ignores RST' if v else 'RST may end TIME_WAIT early'} "
            "(TIME_WAIT assassination, RFC 1337); no effect on capacity")


def _max_orphans(v: Any, s: Sysctls, p: Plan) -> str:
    if v is None:
        return "unknown"
    return (f"global cap on orphans; at {p.rate:g}/s about {p.rate * p.rtt_s:,.0f} are "
            f"orphaned at once (one RTT each), far below {v:,} unless the peer stops answering")


def _syn_backlog(v: Any, s: Sysctls, p: Plan) -> str:
    cookies = s.int("tcp_syncookies")
    if cookies:
        return (f"{v}: inactive while tcp_syncookies={cookies}; the listener's backlog bounds "
                "the SYN queue")
    return f"{v}: with syncookies off, requests from unproven peers drop beyond 3/4 of it"


def _tcp_mem(v: Any, s: Sysctls, p: Plan) -> str:
    nums = s.ints("tcp_mem")
    if not nums or len(nums) != 3:
        return "unknown"
    gib = nums[1] * 4096 / 2**30
    return (f"pages low/pressure/high for all TCP buffers (global); pressure at "
            f"{gib:,.1f} GiB; TIME_WAIT sockets hold no buffers, so rarely the limit here")


def _generic(meaning: str) -> Note:
    def note(v: Any, s: Sysctls, p: Plan) -> str:
        return f"{v}: {meaning}"
    return note


def _ct_max(v: Any, s: Sysctls, p: Plan) -> str:
    if v is None:
        return "absent: nf_conntrack not loaded here, nothing tracked on this host"
    hold = s.int("nf_conntrack_tcp_timeout_time_wait") or 120
    buckets = s.int("nf_conntrack_buckets")
    extra = "" if buckets is None or buckets >= v else \
        f"; buckets {buckets:,} < max: chains longer than 1 on average"
    return (f"entries per netns (global value, read-only outside the initial netns): "
            f"{v // hold:,}/s sustained at {hold} s per entry{extra}")


# The §7 list first (in its order), then the other limits the forecast reads.
NOTES: tuple[tuple[str, Note], ...] = (
    ("net.ipv4.tcp_tw_recycle", _recycle),
    ("net.ipv4.tcp_tw_reuse", _reuse),
    ("net.ipv4.tcp_max_tw_buckets", _max_tw),
    ("net.ipv4.ip_local_port_range", _range),
    ("net.ipv4.tcp_timestamps", _timestamps),
    ("net.ipv4.tcp_fin_timeout", _fin_timeout),
    ("net.ipv4.tcp_orphan_retries", _orphan_retries),
    ("net.ipv4.tcp_rfc1337", _rfc1337),
    ("net.ipv4.tcp_max_orphans", _max_orphans),
    ("net.ipv4.tcp_max_syn_backlog", _syn_backlog),
    ("net.ipv4.tcp_mem", _tcp_mem),
    ("net.ipv4.tcp_tw_reuse_delay", _generic("ms before tcp_tw_reuse may take a TIME_WAIT port")),
    ("net.ipv4.tcp_syncookies", _generic("1 = cookies when a SYN queue overflows (keep it on)")),
    ("net.core.somaxconn", _generic("caps every listen() backlog (Apache/nginx ask for 511)")),
    ("net.netfilter.nf_conntrack_max", _ct_max),
    ("net.netfilter.nf_conntrack_buckets", _generic("conntrack hash size; raise with the max")),
    ("net.netfilter.nf_conntrack_tcp_timeout_time_wait",
     _generic("seconds a closed connection keeps its conntrack entry (writable per netns)")),
    ("fs.file-max", _generic("system-wide open files (ENFILE beyond)")),
    ("fs.nr_open", _generic("ceiling for RLIMIT_NOFILE")),
    ("net.core.netdev_max_backlog", _generic("per-CPU input queue, loopback included")),
    ("net.ipv6.bindv6only",
     _generic("0 = a [::] listener takes IPv4 too, its TIME_WAIT then shows in tcp6 only")),
)


def audit(snapshot: SysctlSnapshot, plan: Plan) -> list[AuditEntry]:
    """One :class:`AuditEntry` per sysctl of :data:`NOTES`, in that order."""
    view = Sysctls(snapshot)
    out = []
    for name, note in NOTES:
        try:
            entry = snapshot.entry(name)
        except KeyError:
            continue  # not in this kernel reader's table
        if entry.value is None:
            scope = "absent"
            text = note(None, view, plan) if name.endswith("tw_recycle") or "conntrack_max" in \
                name else f"absent: {entry.absent_reason}"
        else:
            scope = entry.scope
            text = note(entry.value, view, plan)
        out.append(AuditEntry(name, entry.value, scope, text))
    return out
