"""Synthetic timelines for the diagnosis tests, shaped exactly like docs/schema.md §1-§4.

``make_run(seconds, tweak)`` builds a healthy run (every interval at its target rate,
sub-millisecond connects, nothing failing, a server namespace with an idle conntrack
table) and lets ``tweak(t, row)`` change interval ``t`` (1-based seconds) in place, so a
test states only what differs from healthy: "from t=17 the server's conntrack is full".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]

SYSCTLS: dict[str, Any] = {
    "net.ipv4.tcp_max_tw_buckets": 131072,
    "net.ipv4.ip_local_port_range": "32768 60999",
    "net.ipv4.tcp_tw_reuse": 2,
    "net.ipv4.tcp_timestamps": 1,
    "net.ipv4.tcp_max_orphans": 131072,
    "net.ipv4.tcp_max_syn_backlog": 2048,
    "net.ipv4.tcp_syncookies": 1,
    "net.ipv4.tcp_mem": "287898 383866 575796",
    "net.core.somaxconn": 4096,
    "net.core.netdev_max_backlog": 1000,
    "net.ipv4.tcp_tw_recycle": None,
    "net.netfilter.nf_conntrack_max": 262144,
    "net.netfilter.nf_conntrack_buckets": 262144,
    "fs.file-max": 2466165,
}


def latency(p50: float = 0.2, p90: float = 0.3, p99: float = 0.5, mx: float = 1.0,
            count: int = 1000) -> dict[str, float]:
    """One latency block in ms."""
    return {"p50": p50, "p90": p90, "p99": p99, "p999": mx, "max": mx, "count": count}


def load(rate: float) -> Row:
    """A healthy load interval (§2) at ``rate`` over one second."""
    n = int(rate)
    return {
        "target_rate": rate, "achieved_rate": rate, "attempted": n, "ok": n, "failed": 0,
        "late": 0, "skipped": 0, "inflight": 2, "errors": {},
        "latency_ms": {"connect": latency(), "ttfb": latency(0.5, 0.6, 0.8, 2.0),
                       "total": latency(0.6, 0.7, 0.9, 2.0),
                       "schedule_lag": latency(0.02, 0.04, 0.09, 0.2)},
    }


def counters(**tcpext: float) -> Row:
    """A counters_delta block with every TcpExt field the rules read at 0 unless given."""
    base: dict[str, float] = {
        k: 0 for k in ("ListenOverflows", "ListenDrops", "TCPTimeWaitOverflow",
                       "TCPSynRetrans", "TCPReqQFullDrop", "TCPReqQFullDoCookies",
                       "SyncookiesSent", "TCPAbortOnMemory", "TCPMemoryPressures")}
    base.update(tcpext)
    return {"TcpExt": base, "Tcp": {"ActiveOpens": 0, "PassiveOpens": 0}}


def sample(t: float, where: str, tw: int = 0) -> Row:
    """A healthy kernel sample (§1)."""
    return {
        "t": t, "time": 1795737600.0 + t, "where": where, "interval": 1.0,
        "tcp": {"states": {"TIME_WAIT": tw}, "tw_v4mapped": 0, "source": "sock_diag"},
        "sockstat": {"inuse": 10, "orphan": 0, "tw": tw, "alloc": 12, "mem": 3, "inuse6": 1,
                     "sockets_used": 40},
        "conntrack": {"loaded": True, "active": False, "count": 0, "max": 262144,
                      "buckets": 262144, "timeouts": {"time_wait": 120, "close": 10},
                      "stat": {"drop": 0}, "stat_delta": {"drop": 0, "early_drop": 0}},
        "counters_delta": counters(),
        "counters": {"TcpExt": {}, "Tcp": {}},
        "listen": [],
        "destinations": None,
        "fds": {"system": {"allocated": 2000, "max": 2466165, "nr_open": 1048576},
                "process": {"pid": 4242, "open": 40, "soft": 1048576, "hard": 1048576}},
        "softnet": {"processed": 0, "dropped": 0, "time_squeeze": 0},
        "softnet_delta": {"processed": 1000, "dropped": 0, "time_squeeze": 0},
        "proc_net_tcp": None,
    }


def make_run(
    seconds: int = 20,
    tweak: Callable[[int, Row], None] | None = None,
    *,
    rate: float = 1000.0,
    target: str = "http://198.18.0.2:80/",
    server: bool = True,
    close: str | None = None,
    sysctls: dict[str, Any] | None = None,
) -> tuple[list[Row], Row]:
    """A timeline and summary; ``tweak(t, row)`` edits interval t (1..seconds)."""
    timeline: list[Row] = []
    for t in range(1, seconds + 1):
        srv = sample(float(t), "netns srv", tw=int(rate * min(t, 60))) if server else None
        if srv is not None:
            srv["listen"] = [{"local": "0.0.0.0:80", "queue": 0, "backlog": 511, "family": 4}]
        row: Row = {"t": float(t), "time": 1795737600.0 + t, "load": load(rate),
                    "client": sample(float(t), "host"), "server": srv}
        if tweak is not None:
            tweak(t, row)
        timeline.append(row)
    summary: Row = {
        "tcpchurn_version": "0.1.0", "duration_s": float(seconds), "target": target,
        "target_rate": rate, "achieved_rate": rate,
        "environment": {"kernel": "6.18", "cpus": 2,
                        "sysctls": copy.deepcopy(sysctls if sysctls is not None else SYSCTLS),
                        "rlimit_nofile": [1048576, 1048576],
                        "source_addresses": ["198.18.0.1"], "conntrack_loaded": True},
        "config": {"close": close} if close else {},
    }
    return timeline, summary


def fail(row: Row, errno_name: str, count: int) -> None:
    """Move ``count`` of the interval's connections from ok to failed with ``errno_name``."""
    ld = row["load"]
    ld["ok"] = max(0, ld["ok"] - count)
    ld["failed"] += count
    ld["errors"][errno_name] = ld["errors"].get(errno_name, 0) + count
