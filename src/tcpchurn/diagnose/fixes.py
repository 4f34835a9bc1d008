"""Fixes: what to change for each limit, in machine-applicable parts.

A :class:`Fix` carries sysctl settings per side (``{"client": {name: value}}``), an
nftables ruleset, socket options, server settings (Apache ``ListenBacklog``, nginx
``listen ... backlog=``) and human steps.  The lab applies the machine parts for
``--fix``; the doctor writes them as a sysctl.d file or an nft ruleset; a finding lists
them as lines.

Each builder takes a :class:`FixContext` (the rate, the target port, which side, the
sysctls in force) so the numbers fit the run: ``nf_conntrack_max`` is sized for R × the
conntrack TIME_WAIT timeout, not copied from a blog.  The table in
:mod:`tcpchurn.diagnose.rules` says which builder serves which limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tcpchurn.diagnose.sysctls import Sysctls

TW_LEN_S = 60  # TCP_TIMEWAIT_LEN, include/net/tcp.h
HEADROOM = 1.25  # size tables 25% above the steady state the rate needs
NFT_TABLE = "tcpchurn_notrack"  # our own table: `nft delete table inet tcpchurn_notrack` undoes it


@dataclass(frozen=True)
class FixContext:
    """What a fix is sized for."""

    rate: float = 1000.0
    port: int | None = None  # the target's port, for nft rules and listen lines
    loopback: bool = False
    side: str = "client"  # the side the limit bit
    close: str = "server"  # who closes first: server | client | reset
    source_ips: int = 1
    sysctls: Sysctls = field(default_factory=Sysctls)
    init_netns: bool = True  # nf_conntrack_max/buckets are writable only there (KERNEL.md §2)
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FixContext:
        """Build from a plain dict (unknown keys ignored, ``sysctls`` may be a dict)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "sysctls" in kwargs and not isinstance(kwargs["sysctls"], Sysctls):
            kwargs["sysctls"] = Sysctls(kwargs["sysctls"])
        return cls(**kwargs)


@dataclass(frozen=True)
class Fix:
    """The remedy for one limit: machine-applicable parts plus the human steps."""

    limit: str
    summary: str
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # side -> name -> value
    nft: str | None = None
    socket: dict[str, str] = field(default_factory=dict)  # option -> value (with why)
    server: dict[str, str] = field(default_factory=dict)  # "apache"/"nginx" -> config line
    steps: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The fix as the list of strings a Finding carries (docs/schema.md §5)."""
        out = [self.summary]
        for side, settings in self.sysctls.items():
            out.extend(f"sysctl -w {k}={v}  # on the {side}" for k, v in settings.items())
        if self.nft:
            out.append(
                "nft -f <ruleset>  # `tcpchurn doctor --emit nft --target HOST:PORT` "
                f"writes it; undo: nft delete table inet {NFT_TABLE}"
            )
        out.extend(f"socket: {k} = {v}" for k, v in self.socket.items())
        out.extend(f"{k}: {v}" for k, v in self.server.items())
        out.extend(self.steps)
        return out

    def to_json(self) -> dict[str, Any]:
        """All parts as JSON."""
        return {
            "limit": self.limit,
            "summary": self.summary,
            "sysctls": self.sysctls,
            "nft": self.nft,
            "socket": self.socket,
            "server": self.server,
            "steps": list(self.steps),
        }


def pow2_at_least(n: float) -> int:
    """The smallest power of two >= n (hash tables are sized in powers of two).

    >>> pow2_at_least(150000), pow2_at_least(4096)
    (262144, 4096)
    """
    return 1 << max(0, math.ceil(math.log2(max(n, 1.0))))


def nft_notrack_ruleset(port: int) -> str:
    """An nft ruleset exempting TCP ``port`` from conntrack in BOTH directions.

    KERNEL.md §1 A: with only ``dport`` the server's replies still created entries via
    ``nf_conntrack_tcp_loose`` pickup.  prerouting catches packets arriving from another
    host; output catches our own packets, and on loopback both directions pass output
    first (a packet already marked untracked is not tracked again at prerouting,
    ``nf_conntrack_in``).  Priority ``raw`` (-300) runs before conntrack (-200).
    """
    return (
        f"# tcpchurn: exempt TCP port {port} from connection tracking, both directions\n"
        f"# stateful rules elsewhere must accept `ct state untracked`\n"
        f"# undo: nft delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        f"\tchain pre {{\n"
        f"\t\ttype filter hook prerouting priority raw; policy accept;\n"
        f"\t\ttcp dport {port} notrack\n"
        f"\t\ttcp sport {port} notrack\n"
        f"\t}}\n"
        f"\tchain out {{\n"
        f"\t\ttype filter hook output priority raw; policy accept;\n"
        f"\t\ttcp dport {port} notrack\n"
        f"\t\ttcp sport {port} notrack\n"
        f"\t}}\n"
        f"}}\n"
    )


def sysctl_d_text(fixes: list[Fix], side: str, header: str) -> str:
    """A sysctl.d file with every setting of ``fixes`` for ``side``, commented by limit."""
    out = [f"# {line}" for line in header.splitlines()]
    seen: dict[str, str] = {}
    for fix in fixes:
        settings = fix.sysctls.get(side, {})
        if not settings:
            continue
        out.append(f"# {fix.limit}: {fix.summary}")
        for name, value in settings.items():
            if name in seen:
                continue
            seen[name] = value
            out.append(f"{name} = {value}")
    if not seen:
        out.append("# nothing to change for this plan")
    return "\n".join(out) + "\n"


# --- builders, one per limit (referenced by rules.RULES) -------------------------------
def _raise(ctx: FixContext, name: str, needed: float) -> str | None:
    """A power-of-two value >= needed, or None when the current value already suffices."""
    current = ctx.sysctls.int(name)
    value = pow2_at_least(needed)
    if current is not None and current >= value:
        return None
    return str(value)


def fix_conntrack_full(ctx: FixContext) -> Fix:
    """Exempt the flow from conntrack, or size the table for R × timeout."""
    timeout = ctx.sysctls.int("nf_conntrack_tcp_timeout_time_wait", 120) or 120
    hold = (ctx.sysctls.int("nf_conntrack_tcp_timeout_close", 10) or 10) if ctx.close == "reset" \
        else timeout
    needed = ctx.rate * hold * HEADROOM
    settings: dict[str, str] = {}
    steps = []
    if ctx.init_netns:
        value = _raise(ctx, "nf_conntrack_max", needed)
        if value is not None:
            # max and buckets together: a bigger max on the same hash lengthens chains
            # (chainlength / insert_failed climb, KERNEL.md §1 A).
            settings = {"net.netfilter.nf_conntrack_max": value,
                        "net.netfilter.nf_conntrack_buckets": value}
    else:
        current = ctx.sysctls.int("nf_conntrack_max")
        if current and ctx.rate > 0:
            # nf_conntrack_max is read-only outside the init netns; the TIME_WAIT timeout
            # is per netns (KERNEL.md §2).
            t = max(1, int(current / (ctx.rate * HEADROOM)))
            if t < timeout:
                settings = {"net.netfilter.nf_conntrack_tcp_timeout_time_wait": str(t)}
        steps.append("nf_conntrack_max is read-only in this namespace: raise it on the host")
    steps.append("or lower net.netfilter.nf_conntrack_tcp_timeout_time_wait (per netns)")
    return Fix(
        "conntrack_full",
        "exempt the benchmark flow from conntrack in both directions (nft notrack), "
        "or raise nf_conntrack_max together with nf_conntrack_buckets",
        sysctls={ctx.side: settings} if settings else {},
        nft=nft_notrack_ruleset(ctx.port) if ctx.port else None,
        steps=tuple(steps),
    )


def fix_ephemeral_ports(ctx: FixContext) -> Fix:
    """tw_reuse=1 (with timestamps) on the client, a wider range, more tuples."""
    settings: dict[str, str] = {}
    if ctx.sysctls.int("tcp_tw_reuse") != 1 and not (
        ctx.loopback and ctx.sysctls.int("tcp_tw_reuse") == 2
    ):
        settings["net.ipv4.tcp_tw_reuse"] = "1"
    if ctx.sysctls.int("tcp_timestamps") == 0:
        settings["net.ipv4.tcp_timestamps"] = "1"  # tw_reuse proves newness by timestamps
    rng = ctx.sysctls.range("ip_local_port_range")
    delay = (ctx.sysctls.int("tcp_tw_reuse_delay", 1000) or 1000) / 1000.0
    if rng is not None and ctx.rate * max(delay, 1.0) * HEADROOM > (rng[1] - rng[0] + 1):
        settings["net.ipv4.ip_local_port_range"] = "1024 65535"
    return Fix(
        "ephemeral_ports",
        "let the server close first, or reuse TIME_WAIT ports on the client "
        "(tcp_tw_reuse=1), or spread over more source IPs / destination ports",
        sysctls={"client": settings} if settings else {},
        socket={
            "IP_BIND_ADDRESS_NO_PORT": "1 before bind(src_ip, 0), one source IP per socket",
            "SO_LINGER": "(1, 0) closes with RST: no TIME_WAIT, but the server sees "
            "ECONNRESET (tcpchurn run --close reset)",
        },
        steps=(
            "keep connections alive when the test does not need a new connection each time",
            "read the whole response before close(): unread data turns close into RST",
        ),
    )


def fix_bind_port_conflict(ctx: FixContext) -> Fix:
    """IP_BIND_ADDRESS_NO_PORT: choose the port at connect() time, per 4-tuple."""
    return Fix(
        "bind_port_conflict",
        "set IP_BIND_ADDRESS_NO_PORT before bind(ip, 0) so the port is chosen per 4-tuple",
        socket={
            "IP_BIND_ADDRESS_NO_PORT": "1 (value 24, Linux 4.2)",
            "IP_LOCAL_PORT_RANGE": "per-socket range (Linux 6.3) when ports must be split",
        },
    )


def fix_tw_buckets(ctx: FixContext) -> Fix:
    """Raise tcp_max_tw_buckets to R × 60 s, or leave it: overflow is mostly harmless."""
    value = _raise(ctx, "tcp_max_tw_buckets", ctx.rate * TW_LEN_S * HEADROOM)
    return Fix(
        "tw_buckets",
        "raise tcp_max_tw_buckets on the side that closes first (or accept the overflow: "
        "sockets then close without TIME_WAIT)",
        sysctls={ctx.side: {"net.ipv4.tcp_max_tw_buckets": value}} if value else {},
    )


def _backlog(ctx: FixContext) -> int:
    # One second of arrivals, at least the 4096 somaxconn default (commit 19f92a030ca6).
    return max(4096, pow2_at_least(ctx.rate))


def fix_accept_queue(ctx: FixContext) -> Fix:
    """A larger listen backlog together with somaxconn; a faster accept loop."""
    backlog = _backlog(ctx)
    port = ctx.port or 80
    settings = {"net.core.somaxconn": str(backlog)}
    current = ctx.sysctls.int("somaxconn")
    if current is not None and current >= backlog:
        settings = {}
    return Fix(
        "accept_queue",
        f"listen with a backlog of {backlog} (capped by net.core.somaxconn) and accept faster",
        sysctls={"server": settings} if settings else {},
        socket={"listen_backlog": str(backlog), "SO_REUSEPORT": "1 accept loop per core"},
        server={"apache": f"ListenBacklog {backlog}",
                "nginx": f"listen {port} backlog={backlog};"},
        steps=("with tcp_abort_on_overflow=1 clients get ECONNRESET instead of retrying",),
    )


def fix_syn_queue(ctx: FixContext) -> Fix:
    """A larger backlog; keep syncookies on."""
    backlog = _backlog(ctx)
    port = ctx.port or 80
    settings = {"net.ipv4.tcp_syncookies": "1"} if ctx.sysctls.int("tcp_syncookies") == 0 else {}
    return Fix(
        "syn_queue",
        f"a listen backlog of {backlog}; keep tcp_syncookies=1",
        sysctls={"server": settings} if settings else {},
        socket={"listen_backlog": str(backlog)},
        server={"apache": f"ListenBacklog {backlog}",
                "nginx": f"listen {port} backlog={backlog};"},
    )


def fix_orphans(ctx: FixContext) -> Fix:
    """Raise tcp_max_orphans (global); fewer FIN retries (per netns)."""
    peak = float(ctx.evidence.get("orphan_peak") or 0) or ctx.rate
    value = _raise(ctx, "tcp_max_orphans", 2 * peak)
    settings = {"net.ipv4.tcp_orphan_retries": "2"}
    if value:
        settings["net.ipv4.tcp_max_orphans"] = value
    return Fix("orphans", "raise tcp_max_orphans (global); lower tcp_orphan_retries",
               sysctls={ctx.side: settings})


def fix_tcp_mem(ctx: FixContext) -> Fix:
    """Raise tcp_mem (pages, global); check the container's memcg socket limit."""
    mem = ctx.sysctls.ints("tcp_mem")
    settings = {"net.ipv4.tcp_mem": " ".join(str(2 * v) for v in mem)} if mem else {}
    return Fix("tcp_mem", "raise tcp_mem (pages; global) or use less buffer per socket",
               sysctls={ctx.side: settings} if settings else {},
               steps=("in a container the memcg socket accounting may be the real limit",))


def fix_fd_process(ctx: FixContext) -> Fix:
    """Raise RLIMIT_NOFILE soft to hard (no root needed)."""
    return Fix(
        "fd_process",
        "raise RLIMIT_NOFILE: `ulimit -n $(ulimit -Hn)` or "
        "resource.setrlimit(RLIMIT_NOFILE, (hard, hard)) at startup",
        server={"nginx": "worker_rlimit_nofile 65536;",
                "systemd": "LimitNOFILE=1048576"},
        steps=("fs.nr_open caps the hard limit", "never use select(): it fails above fd 1024"),
    )


def fix_fd_system(ctx: FixContext) -> Fix:
    """Raise fs.file-max (global)."""
    current = ctx.sysctls.int("file-max")
    value = str(2 * current) if current else "4194304"
    return Fix("fd_system", "raise fs.file-max", sysctls={ctx.side: {"fs.file-max": value}})


def fix_netdev_backlog(ctx: FixContext) -> Fix:
    """Raise netdev_max_backlog (global); spread softirq work (RPS)."""
    current = ctx.sysctls.int("netdev_max_backlog") or 1000
    return Fix("netdev_backlog", "raise net.core.netdev_max_backlog (global, per CPU)",
               sysctls={ctx.side: {"net.core.netdev_max_backlog": str(max(4096, 2 * current))}},
               steps=("spread receive work over CPUs (RPS/RSS)",))


def fix_generator_saturated(ctx: FixContext) -> Fix:
    """The generator is the bottleneck: more workers, cores or hosts."""
    return Fix("generator_saturated",
               "give the generator more CPU: more worker processes, more cores, or a second "
               "client host; or lower the rate",
               steps=("results after the onset measure tcpchurn, not the server",))


def fix_server_refused(ctx: FixContext) -> Fix:
    """Start the server / check the address; ECONNRESET may be tcp_abort_on_overflow."""
    return Fix("server_refused",
               "check that the server listens on the target address and port before the run",
               steps=("with tcp_abort_on_overflow=1 an accept queue overflow is a RST",))


def fix_server_slow(ctx: FixContext) -> Fix:
    """More server capacity."""
    return Fix("server_slow", "give the server more workers or make its handler faster",
               server={"apache": "MaxRequestWorkers (mpm_event)",
                       "nginx": "worker_processes auto;"})


def fix_unreachable(ctx: FixContext) -> Fix:
    """Routes, firewalls, and watching the server side."""
    return Fix("unreachable",
               "check routes and firewalls; watch the server side (its conntrack table and "
               "accept queue) to see which one drops the SYNs")


def fix_dual_stack_tw(ctx: FixContext) -> Fix:
    """Nothing to fix: count TIME_WAIT with sockstat, which covers both families."""
    port = ctx.port or 80
    return Fix("dual_stack_tw",
               "nothing to fix: count TIME_WAIT with /proc/net/sockstat `tw` (both families), "
               "not `wc -l /proc/net/tcp`",
               server={"apache": f"Listen 0.0.0.0:{port} (IPv4 sockets in /proc/net/tcp)",
                       "nginx": f"listen {port}; rather than listen [::]:{port};"})


def fix_for(limit_id: str, context: FixContext | Mapping[str, Any] | None = None) -> Fix:
    """The :class:`Fix` for a limit id of DESIGN.md, sized by ``context``.

    >>> fix_for("accept_queue", {"rate": 1000, "port": 8080}).server["nginx"]
    'listen 8080 backlog=4096;'

    Raises ``KeyError`` naming the id when it is not a limit tcpchurn knows.
    """
    # rules imports this module for the builders; look the row up at call time.
    from tcpchurn.diagnose.rules import rule

    if context is None:
        ctx = FixContext()
    elif isinstance(context, FixContext):
        ctx = context
    else:
        ctx = FixContext.from_mapping(context)
    return rule(limit_id).fix(ctx)
