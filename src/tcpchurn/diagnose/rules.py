"""THE table of limits: one row per limit id, read by the verdict, the doctor, the docs
and the tests (STYLE.md rule 6, like h11's ``_state.py``).

Each :class:`Rule` says what the limit is (``title``), where it bites (``sides``), how it
is recognised (``evidence``: a predicate over the run, in :mod:`tcpchurn.diagnose.tables` or
:mod:`tcpchurn.diagnose.connects`),
how to explain it with the run's own numbers (``explanation``: a template over the
predicate's figures plus ``side`` and ``onset_s``), how to fix it (``fix``: a builder in
:mod:`tcpchurn.diagnose.fixes`), which fixes are wrong (``wrong_fixes``), and which
other limits explain it better when both are seen (``yields_to``: a run whose server
accept queue overflowed also times out connects; the accept queue is the finding).

The ids are DESIGN.md's vocabulary, plus ``dual_stack_tw``: an informational note (never
worse than "warning") answering the 2009 report's third question (KERNEL.md §3).

Row order is the tie-break when two limits start in the same interval: causes before
their consequences.  ``docs/limits.md`` is generated from this table
(``python scripts/gen_limits_md.py``) and a test keeps it in sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tcpchurn.diagnose import connects as cn
from tcpchurn.diagnose import fixes as fx
from tcpchurn.diagnose import tables as tb
from tcpchurn.diagnose.evidence import Predicate

# Wrong fixes people reach for (KERNEL.md §1 and §7): one sentence each, with the reason.
WF_TW_RECYCLE = (
    "net.ipv4.tcp_tw_recycle: removed in Linux 4.12 (commit 4396e46187ca); it expired "
    "TIME_WAIT by per-host timestamps, broke clients behind NAT, and broke everyone once "
    "timestamp offsets became per connection (4.10)"
)
WF_LOWER_TW_BUCKETS = (
    "lowering tcp_max_tw_buckets: sockets then close without TIME_WAIT "
    "(TcpExtTCPTimeWaitOverflow), a lost last ACK becomes a RST, and the rate limit stays"
)
WF_FIN_TIMEOUT = (
    "lowering tcp_fin_timeout: it only limits orphaned FIN_WAIT2 sockets; TIME_WAIT is fixed "
    "at 60 s (TCP_TIMEWAIT_LEN)"
)
WF_CT_MAX_IN_NETNS = (
    "raising nf_conntrack_max inside a container or network namespace: it is read-only "
    "there (global, writable only in the initial netns)"
)
WF_CT_MAX_WITHOUT_BUCKETS = (
    "raising nf_conntrack_max without nf_conntrack_buckets: hash chains grow and the "
    "chainlength / insert_failed counters climb"
)
WF_FIREWALL_OFF = (
    "turning the firewall off on a production host: exempt the benchmark flow with "
    "`notrack` instead"
)
WF_TW_REUSE_SERVER = (
    "tcp_tw_reuse on the server: it only lets connect() reuse ports, i.e. helps the client"
)
WF_SOMAXCONN_ALONE = (
    "raising net.core.somaxconn alone: the application's own listen() backlog (Apache and "
    "nginx 511, asyncio 100, socketserver 5) still caps the queue"
)
WF_MAX_SYN_BACKLOG = (
    "raising tcp_max_syn_backlog while syncookies are on: the listener's backlog bounds the "
    "SYN queue; tcp_max_syn_backlog only matters with tcp_syncookies=0"
)
WF_SYNCOOKIES_OFF = "turning tcp_syncookies off: a full SYN queue then drops requests"
WF_SELECT = (
    "raising FD_SETSIZE or ulimit with a select()-based client: select() fails above fd 1024"
)


@dataclass(frozen=True)
class Rule:
    """One limit: its evidence, explanation, fix and wrong fixes."""

    id: str
    title: str
    sides: tuple[str, ...]  # where it can bite: "client", "server"
    evidence: Predicate
    signals: str  # what the predicate looks at (docs, --help)
    arithmetic: str  # capacity and time to fill (docs; forecast.py implements it)
    explanation: str  # template over the evidence figures, side and onset_s
    fix: Callable[[fx.FixContext], fx.Fix]
    wrong_fixes: tuple[str, ...] = ()
    yields_to: tuple[str, ...] = ()


RULES: tuple[Rule, ...] = (
    Rule(
        "conntrack_full", "conntrack table full", ("server", "client"), tb.conntrack_full,
        "nf_conntrack_count at nf_conntrack_max; the `drop` column of "
        "/proc/net/stat/nf_conntrack climbing; client TCPSynRetrans and connect times at "
        "1/3/7 s; no errno on the client",
        "an entry lives nf_conntrack_tcp_timeout_time_wait (120 s) after a clean close, 10 s "
        "after RST: full after max/R s, R_max = max/120; bounded by the distinct 4-tuples "
        "(about range/2 per client address when the server closes first)",
        "The {side}'s conntrack table reached {count:,.0f} of {max:,.0f} entries at "
        "{onset_s:.1f} s. At {rate:,.0f} new connections/s and {timeout_s:.0f} s per entry "
        "(nf_conntrack_tcp_timeout_time_wait) it fills after {max:,.0f}/{rate:,.0f} = "
        "{fill_s:.1f} s; it sustains at most {max_rate:,.0f}/s. From then the kernel dropped "
        "{drop_per_s:,.0f} packets/s ({drop_total:,.0f} in all) without telling the client: "
        "SYNs were retransmitted ({syn_retrans_per_s:,.0f}/s; connect times at SYN "
        "retransmit steps: {syn_steps_s:steps}) and connects waited or timed out.",
        fx.fix_conntrack_full,
        (WF_CT_MAX_IN_NETNS, WF_CT_MAX_WITHOUT_BUCKETS, WF_FIREWALL_OFF, WF_TW_RECYCLE),
    ),
    Rule(
        "ephemeral_ports", "ephemeral ports exhausted", ("client",), cn.ephemeral_ports,
        "connect() fails with EADDRNOTAVAIL; sockstat tw near the port range; a "
        "destination's sockets near the range; the generator behind while a destination "
        "holds half its ports or more (connect() searching for a free port)",
        "ports per (src ip, dst ip, dst port) = ip_local_port_range; a client-closed "
        "connection holds its port 60 s (TIME_WAIT): R_max = range/60 (470/s), about 1 s "
        "with tcp_tw_reuse=1 (2 on loopback)",
        "The client's ephemeral ports ran short from {onset_s:.1f} s: {symptom}. Each "
        "connection the client closes first keeps its port in TIME_WAIT for 60 s, and each "
        "destination "
        "ip:port has {port_range:,.0f} ports per source address: full after {fill_s:.1f} s at "
        "{rate:,.0f}/s, at most {max_rate:,.0f}/s without reuse (tcp_tw_reuse is "
        "{tw_reuse}; peak TIME_WAIT {tw_peak:,.0f}).",
        fx.fix_ephemeral_ports,
        (WF_TW_RECYCLE, WF_FIN_TIMEOUT, WF_LOWER_TW_BUCKETS, WF_TW_REUSE_SERVER),
    ),
    Rule(
        "bind_port_conflict", "bind() before connect() used up the ports", ("client",),
        cn.bind_port_conflict,
        "bind(ip, 0) fails with EADDRINUSE",
        "bind(ip, 0) takes a port for every destination: range per source address in all",
        "bind() failed with EADDRINUSE from {onset_s:.1f} s ({errors_total:,.0f} times, "
        "{errors_per_s:,.0f}/s): bind(ip, 0) reserves a port before the destination is known, "
        "so {source_addresses} source address(es) have only {port_range:,.0f} ports for all "
        "destinations together, and connect() then skips those ports too.",
        fx.fix_bind_port_conflict,
        (WF_TW_RECYCLE,),
    ),
    Rule(
        "tw_buckets", "TIME_WAIT bucket overflow", ("server", "client"), tb.tw_buckets,
        "TcpExtTCPTimeWaitOverflow counting; sockstat tw at tcp_max_tw_buckets "
        "(no log line on modern kernels)",
        "R x 60 s TIME_WAIT sockets on the side that closes first: R_max = "
        "tcp_max_tw_buckets/60 (131072/60 = 2184/s)",
        "The {side}'s TIME_WAIT table overflowed from {onset_s:.1f} s: {overflow_total:,.0f} "
        "sockets ({overflow_per_s:,.0f}/s) closed without TIME_WAIT "
        "(TcpExtTCPTimeWaitOverflow) while TIME_WAIT stayed at {tw_peak:,.0f} "
        "(tcp_max_tw_buckets {max_tw:,.0f}). At {rate:,.0f}/s the side that closes first "
        "holds rate x 60 s sockets, so this cap allows {max_rate:,.0f}/s. Mostly harmless: "
        "a lost last ACK becomes a RST.",
        fx.fix_tw_buckets,
        (WF_TW_RECYCLE, WF_LOWER_TW_BUCKETS, WF_FIN_TIMEOUT),
    ),
    Rule(
        "fd_process", "file descriptors: process limit (EMFILE)", ("client", "server"),
        tb.fd_process,
        "socket()/accept() fail with EMFILE; open fds at RLIMIT_NOFILE",
        "about R x lifetime descriptors open at once (TIME_WAIT holds none) vs "
        "RLIMIT_NOFILE",
        "The {side} process ran out of file descriptors at {onset_s:.1f} s "
        "({errors_total:,.0f} EMFILE; RLIMIT_NOFILE soft {limit:,.0f}, hard {hard:,.0f}; "
        "peak seen open {open_peak:,.0f}). At {rate:,.0f}/s the load holds about rate x "
        "connection lifetime descriptors (median lifetime {lifetime_ms:,.0f} ms); on a "
        "server, EMFILE from accept() leaves connections queued and shows as ListenOverflows.",
        fx.fix_fd_process,
        (WF_SELECT,),
    ),
    Rule(
        "fd_system", "file descriptors: system limit (ENFILE)", ("client", "server"),
        tb.fd_system,
        "ENFILE; fs/file-nr allocated at fs.file-max",
        "system-wide open files vs fs.file-max",
        "The system ran out of file handles at {onset_s:.1f} s: {open_peak:,.0f} allocated of "
        "fs.file-max {limit:,.0f} ({errors_total:,.0f} ENFILE).",
        fx.fix_fd_system,
    ),
    Rule(
        "accept_queue", "accept queue overflow", ("server",), cn.accept_queue,
        "TcpExtListenOverflows / ListenDrops; LISTEN Recv-Q at its backlog; client SYN "
        "retransmits and connect times at 1/3/7 s",
        "queue = min(listen backlog, somaxconn) + 1; fills after (backlog+1)/(R - A) s when "
        "the application accepts A/s < R",
        "The server's accept queue overflowed from {onset_s:.1f} s: {overflows_total:,.0f} "
        "ListenOverflows ({overflows_per_s:,.0f}/s) on {listener} (queue peak {queue_peak}, "
        "backlog {backlog}, somaxconn {somaxconn}). The application accepted slower than "
        "{rate:,.0f} connections/s arrived; the kernel dropped the SYNs it could not queue, "
        "so clients retransmitted ({syn_retrans_per_s:,.0f}/s, connect p99 "
        "{connect_p99_ms:,.0f} ms).",
        fx.fix_accept_queue,
        (WF_SOMAXCONN_ALONE, WF_MAX_SYN_BACKLOG),
    ),
    Rule(
        "syn_queue", "SYN queue full", ("server",), cn.syn_queue,
        "TcpExtTCPReqQFullDoCookies / SyncookiesSent (syncookies=1) or TCPReqQFullDrop "
        "(syncookies=0)",
        "about R x RTT half-open requests per listener, bounded by the listener's backlog",
        "The server's SYN queue on {listener} (backlog {backlog}) was full from "
        "{onset_s:.1f} s: {cookies_total:,.0f} syncookies sent and {drops_total:,.0f} requests "
        "dropped ({per_s:,.0f}/s; tcp_syncookies={syncookies}). Final ACKs are lost or "
        "arrive late, so half-open requests pile up.",
        fx.fix_syn_queue,
        (WF_MAX_SYN_BACKLOG, WF_SYNCOOKIES_OFF),
        # A full accept queue drops the final ACKs, so requests stay in the SYN queue and
        # it fills too (tcp_check_req -> syn_recv_sock fails): the accept queue is the cause.
        yields_to=("accept_queue",),
    ),
    Rule(
        "orphans", "too many orphaned sockets", ("client", "server"), tb.orphans,
        "sockstat orphan (global) at tcp_max_orphans; TcpExtTCPAbortOnMemory",
        "orphans = R x T (T about one RTT, minutes when the peer is silent) vs "
        "tcp_max_orphans",
        "Orphaned sockets (closed, still in FIN_WAIT1/CLOSING/LAST_ACK) reached "
        "{orphan_peak:,.0f} of tcp_max_orphans {max_orphans:,.0f} at {onset_s:.1f} s "
        "({abort_on_memory_total:,.0f} TCPAbortOnMemory): beyond it the kernel resets "
        "connections ('too many orphaned sockets').",
        fx.fix_orphans,
    ),
    Rule(
        "tcp_mem", "TCP memory pressure", ("client", "server"), tb.tcp_mem,
        "TcpExtTCPMemoryPressures; sockstat mem above tcp_mem[1]; TCPAbortOnMemory",
        "pages of socket buffers vs tcp_mem (global); TIME_WAIT holds none",
        "TCP memory went into pressure at {onset_s:.1f} s (sockstat mem peak "
        "{mem_peak_pages} pages, tcp_mem {tcp_mem}, {pressures_total:,.0f} pressure events, "
        "{abort_on_memory_total:,.0f} aborts).",
        fx.fix_tcp_mem,
    ),
    Rule(
        "netdev_backlog", "per-CPU input backlog drops", ("client",), tb.netdev_backlog,
        "column 2 (dropped) of /proc/net/softnet_stat",
        "netdev_max_backlog packets per CPU queue (also loopback)",
        "The per-CPU input backlog dropped {drops_total:,.0f} packets ({drops_per_s:,.0f}/s) "
        "from {onset_s:.1f} s (netdev_max_backlog {netdev_max_backlog}); dropped SYNs are "
        "retransmitted after 1 s.",
        fx.fix_netdev_backlog,
    ),
    Rule(
        "server_refused", "server refused connections", ("server",), cn.server_refused,
        "ECONNREFUSED / ECONNRESET sustained (not only while the server starts)",
        "none: no listener, or a RST from it",
        "The server refused connections from {onset_s:.1f} s: {refused_total:,.0f} "
        "ECONNREFUSED and {reset_total:,.0f} ECONNRESET ({share:.1%} of attempts).",
        fx.fix_server_refused,
        yields_to=("accept_queue", "orphans"),
    ),
    Rule(
        "server_slow", "server slow to answer", ("server",), cn.server_slow,
        "ttfb minus connect time (p50) above 1 s for 2 intervals; RESPONSE_TIMEOUT",
        "the server's service rate, not a kernel table",
        "The server took {service_p50_ms:,.0f} ms to answer after connecting (ttfb p50 "
        "{ttfb_p50_ms:,.0f} ms, {response_timeouts_total:,.0f} response timeouts) from "
        "{onset_s:.1f} s at {rate:,.0f} connections/s.",
        fx.fix_server_slow,
        yields_to=("accept_queue", "syn_queue", "fd_process", "conntrack_full"),
    ),
    Rule(
        "unreachable", "SYNs unanswered or no route", ("server",), cn.unreachable,
        "ENETUNREACH/EHOSTUNREACH; ETIMEDOUT or connect times at SYN retransmit steps "
        "with no watched table to blame",
        "none",
        "From {onset_s:.1f} s connects failed or waited: {unreach_total:,.0f} without a "
        "route (ENETUNREACH/EHOSTUNREACH), {timeouts_total:,.0f} unanswered (ETIMEDOUT), "
        "connect p90 up to {connect_p90_ms:,.0f} ms (SYN retransmit steps: "
        "{syn_steps_s:steps}). No watched table explains it (server side watched: "
        "{server_watched}): a route is missing, or something on the path drops SYNs, such "
        "as a conntrack table or an accept queue on a host tcpchurn does not see.",
        fx.fix_unreachable,
        yields_to=("conntrack_full", "accept_queue", "syn_queue", "netdev_backlog",
                   "fd_process", "fd_system", "orphans", "tcp_mem"),
    ),
    Rule(
        "generator_saturated", "load generator could not keep the schedule", ("client",),
        cn.generator_saturated,
        "achieved rate below 99% of target, skipped connections, schedule lag p99 >= 50 ms",
        "the generator's own CPU",
        "tcpchurn itself fell behind from {onset_s:.1f} s: it started {achieved_rate:,.0f} "
        "of {target_rate:,.0f} connections/s ({skipped_total:,.0f} skipped, schedule lag p99 "
        "{lag_p99_ms:,.0f} ms). Figures after that measure the generator, not the server.",
        fx.fix_generator_saturated,
        yields_to=("conntrack_full", "accept_queue", "syn_queue", "server_slow", "unreachable",
                   "netdev_backlog", "fd_process", "ephemeral_ports"),
    ),
    Rule(
        "dual_stack_tw", "TIME_WAIT of IPv4 clients shows in tcp6 (dual-stack listener)",
        ("server", "client"), tb.dual_stack_tw,
        "tw_v4mapped (TIME_WAIT in tcp6 with ::ffff:a.b.c.d) most of sockstat tw",
        "none: where TIME_WAIT is listed, not a limit",
        "The {side}'s TIME_WAIT sockets ({v4mapped_peak:,.0f} of {tw_peak:,.0f}) are IPv4 "
        "connections accepted by a [::] listener (net.ipv6.bindv6only=0): they are AF_INET6 "
        "sockets with ::ffff: addresses, so `wc -l /proc/net/tcp6` climbs while "
        "/proc/net/tcp stays short. This is the 2009 report's third question; sockstat `tw` "
        "counts both families.",
        fx.fix_dual_stack_tw,
    ),
)

LIMIT_IDS: tuple[str, ...] = tuple(r.id for r in RULES)
_BY_ID = {r.id: r for r in RULES}


def rule(limit_id: str) -> Rule:
    """The row for ``limit_id``; ``KeyError`` naming it and the known ids otherwise."""
    try:
        return _BY_ID[limit_id]
    except KeyError:
        raise KeyError(f"{limit_id!r} is not a limit id (known: {', '.join(LIMIT_IDS)})") from None
