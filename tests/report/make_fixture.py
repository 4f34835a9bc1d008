"""Generate recorded run directories (docs/schema.md §3-§5) for the report tests.

Until real runs existed these were the only runs the report could be tested on; they
stay because they tell known stories with known numbers:

* ``seed-2009``: the 2009 LKML report. 1,000 new connections/s to Apache in another
  namespace whose conntrack table holds 16,384 entries. The table fills at 16.4 s
  (16384 / 1000), SYNs are dropped silently, the few connects that get through do so
  after SYN retransmits (1 s, 3 s: ``TCP_TIMEOUT_INIT`` doubling), and the rest fail with
  ETIMEDOUT after the run's 10 s timeout. The server holds TIME_WAIT (Apache closes
  first) as IPv4-mapped sockets in tcp6. KERNEL.md §1A and §3.
* ``healthy``: 500/s for 10 s against the built-in server on loopback, the client closes
  first and holds 5,000 TIME_WAIT sockets of its 28,232 ports; no conntrack module.
* :func:`synthetic` builds runs of any length (the 10-minute size test).

Everything is derived from a seeded RNG so the files are reproducible::

    python -m tests.report.make_fixture          # rewrites tests/fixtures/runs/{seed-2009,healthy}
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any, cast

STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
          "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")
STAT_KEYS = ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "icmp_error",
             "expect_new", "expect_create", "expect_delete", "search_restart", "clashres",
             "chainlength")
START = 1795737600.0  # 2026-11-27T10:00:00Z
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
SYSCTLS = {
    "net.ipv4.tcp_max_tw_buckets": 131072, "net.ipv4.ip_local_port_range": "32768 60999",
    "net.ipv4.tcp_tw_reuse": 2, "net.ipv4.tcp_timestamps": 1, "net.ipv4.tcp_fin_timeout": 60,
    "net.ipv4.tcp_max_orphans": 131072, "net.ipv4.tcp_max_syn_backlog": 2048,
    "net.core.somaxconn": 4096, "net.ipv4.tcp_tw_recycle": None,
    "net.netfilter.nf_conntrack_max": 262144, "net.netfilter.nf_conntrack_buckets": 262144,
    "fs.file-max": 2466165, "fs.nr_open": 1048576,
}


def _lat(p50: float, spread: float = 1.0, count: int = 0,
         tail: float | None = None) -> dict[str, float | int | None]:
    """Percentiles (ms) rising from ``p50``; all null when nothing completed."""
    if count == 0:
        return {"p50": None, "p90": None, "p99": None, "p999": None, "max": None, "count": 0}
    top = tail if tail is not None else p50 * 6 * spread
    return {"p50": round(p50, 3), "p90": round(p50 * 1.8 * spread, 3),
            "p99": round(max(p50 * 3 * spread, min(top, p50 * 4 * spread)), 3),
            "p999": round(max(p50 * 5 * spread, top * 0.95), 3), "max": round(top, 3),
            "count": count}


def _states(**kw: int) -> dict[str, int]:
    return {s: kw.get(s, 0) for s in STATES}


def kernel_sample(t: float, where: str, *, states: dict[str, int], tw_v4mapped: int | None,
                  ct_count: int | None, ct_max: int | None, ct_drop: int,
                  ct_active: bool, listen: list[dict[str, Any]],
                  destinations: list[dict[str, Any]] | None, fd_open: int | None,
                  fd_sys: int, counters_delta: dict[str, dict[str, int]] | None,
                  orphan: int = 0, first: bool = False) -> dict[str, Any]:
    """One kernel sample (schema §1) with the given table sizes."""
    tw = states["TIME_WAIT"]
    loaded = ct_max is not None
    stat = {k: 0 for k in STAT_KEYS}
    stat["drop"] = ct_drop
    return {
        "t": t, "time": START + t, "where": where, "interval": None if first else 1.0,
        "tcp": {"states": states, "states_v4": None, "states_v6": None,
                "tw_v4mapped": tw_v4mapped, "source": "sock_diag"},
        "sockstat": {"inuse": states["ESTABLISHED"] + states["LISTEN"] + 4,
                     "orphan": orphan, "tw": tw,
                     "alloc": states["ESTABLISHED"] + states["LISTEN"] + 6, "mem": 3 + tw // 4000,
                     "inuse6": 2, "sockets_used": fd_sys // 20},
        "conntrack": {
            "loaded": loaded, "active": ct_active,
            "count": ct_count, "max": ct_max, "buckets": ct_max,
            "timeouts": {"time_wait": 120, "close": 10, "established": 432000} if loaded
            else None,
            "stat": stat if loaded else None,
            "stat_delta": None if first or not loaded else {**{k: 0 for k in STAT_KEYS},
                                                            "drop": ct_drop},
        },
        "counters_delta": counters_delta,
        "counters": {"TcpExt": {}, "Tcp": {}},
        "listen": listen,
        "destinations": destinations,
        "fds": {"system": {"allocated": fd_sys, "max": 2466165, "nr_open": 1048576},
                "process": None if fd_open is None else
                {"pid": 4242, "open": fd_open, "soft": 1048576, "hard": 1048576}},
        "softnet": {"processed": int(t * 3000), "dropped": 0, "time_squeeze": 0},
        "softnet_delta": None if first else {"processed": 3000, "dropped": 0,
                                             "time_squeeze": 0},
    }


def _counters(active: int = 0, passive: int = 0, synretrans: int = 0,
              overflows: int = 0) -> dict[str, dict[str, int]]:
    return {"TcpExt": {"ListenOverflows": overflows, "ListenDrops": overflows,
                       "TCPTimeWaitOverflow": 0, "TCPSynRetrans": synretrans},
            "Tcp": {"ActiveOpens": active, "PassiveOpens": passive, "AttemptFails": 0,
                    "EstabResets": 0, "RetransSegs": synretrans}}


def seed_2009() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The 2009 story: conntrack full at 16.4 s, then drops, retransmits, ETIMEDOUT."""
    rng = random.Random(2009)
    rate, duration, timeout, ct_max = 1000, 30, 10.0, 16384
    onset = ct_max / rate  # 16.384 s: the table fills at max / R (KERNEL.md §1A)
    lines: list[dict[str, Any]] = []
    pending = 0  # SYN_SENT: connects waiting behind dropped SYNs
    dropped_at: dict[int, int] = {}  # second -> connects whose SYNs the full table dropped
    tot = {"attempted": 0, "ok": 0, "failed": 0}
    first_err: float | None = None
    for i in range(1, duration + 1):
        t = float(i)
        attempted = rate + rng.randint(-1, 1)
        through_now = attempted if t <= onset else (
            attempted - int(attempted * (1 - (onset - (t - 1)))) if t - 1 < onset else 0)
        blocked = attempted - through_now
        dropped_at[i] = blocked
        # A few retried SYNs find space the conntrack GC freed (it evicts TIME_WAIT entries
        # once the table is >= 95 % full: gc_worker_can_early_drop): they connect after 1 s
        # or 3 s, the retransmit steps (TCP_TIMEOUT_INIT doubling, RFC 6298 §5.5).
        late_1 = int(dropped_at.get(i - 1, 0) * 0.03)
        late_3 = int(dropped_at.get(i - 3, 0) * 0.02)
        # Connections scheduled `timeout` seconds ago and still pending fail now.
        expired = int(dropped_at.get(i - int(timeout), 0) * 0.95)
        ok = through_now + late_1 + late_3
        failed = expired
        if failed and first_err is None:
            first_err = round(onset + timeout + 0.021, 3)
        pending = max(0, pending + blocked - late_1 - late_3 - expired)
        ct_count = min(ct_max, int(rate * t) + 12)
        drop = 0 if t <= onset else blocked + int(pending * 0.45)
        tw_server = min(int(rate * min(t, 60)), ct_count - 12) - rng.randint(0, 30)
        errors = {"ETIMEDOUT": failed} if failed else {}
        if through_now == 0 and ok:  # only retransmitted SYNs got through: 1 s and 3 s
            connect = _lat(1001.0 + rng.random(), count=ok, tail=3010.0 + rng.random() * 20)
            connect["p90"] = round(3001.0 + rng.random() * 3, 3) if late_3 else 1002.0
            connect["p99"] = round(3002.0 + rng.random() * 5, 3) if late_3 else 1004.0
            connect["p999"] = connect["max"] = max(float(connect["p99"] or 0), 1005.0)
        elif late_3:
            connect = _lat(0.14, count=ok, tail=3010.0 + rng.random() * 20)
            connect["p99"] = round(3001.0 + rng.random() * 5, 3)
            connect["p90"] = round(1002.0 + rng.random() * 3, 3)
        elif late_1:
            connect = _lat(0.14, count=ok, tail=1010.0 + rng.random() * 10)
            connect["p99"] = round(1001.0 + rng.random() * 5, 3)
        else:
            connect = _lat(0.12 + rng.random() * 0.03, count=ok)
        ttfb = dict(connect)
        total = dict(connect)
        for d, extra in ((ttfb, 0.35), (total, 0.45)):
            for k in ("p50", "p90", "p99", "p999", "max"):
                if d[k] is not None:
                    d[k] = round(float(cast(float, d[k])) + extra, 3)
        load = {
            "target_rate": float(rate), "achieved_rate": float(attempted),
            "attempted": attempted, "ok": ok, "failed": failed, "late": 0, "skipped": 0,
            "inflight": pending + 3, "errors": errors,
            "latency_ms": {"connect": connect, "ttfb": ttfb, "total": total,
                           "schedule_lag": _lat(0.02 + rng.random() * 0.01, count=attempted)},
        }
        for k in tot:
            tot[k] += int(cast(int, load[k]))
        synretrans = 0 if t <= onset + 1 else pending
        client = kernel_sample(
            t, "host", states=_states(ESTABLISHED=3, SYN_SENT=pending, LISTEN=1),
            tw_v4mapped=0, ct_count=0, ct_max=262144, ct_drop=0, ct_active=False, listen=[],
            destinations=[{"remote": "198.18.0.2:80", "sockets": pending + 3,
                           "states": {"SYN_SENT": pending, "ESTABLISHED": 3},
                           "port_range": 28232}] if i % 7 else None,
            fd_open=42 + pending, fd_sys=2100 + pending,
            counters_delta=None if i == 1 else _counters(active=attempted, synretrans=synretrans),
            first=i == 1)
        server = kernel_sample(
            t, "netns tcpchurn-lab-srv",
            states=_states(ESTABLISHED=2, TIME_WAIT=tw_server, LISTEN=1),
            tw_v4mapped=tw_server, ct_count=ct_count, ct_max=ct_max, ct_drop=drop,
            ct_active=True,
            listen=[{"local": "[::]:80", "queue": rng.randint(0, 2), "backlog": 511,
                     "family": 6}],
            destinations=None, fd_open=None, fd_sys=2100 + pending,
            counters_delta=None if i == 1 else _counters(passive=ok),
            orphan=rng.randint(0, 3), first=i == 1)
        if i == 9:  # kernel variance: one sample with no sockstat TIME_WAIT
            server["sockstat"]["tw"] = None
        lines.append({"t": t, "time": START + t, "load": load, "client": client,
                      "server": server})
    after = [ln for ln in lines if ln["t"] > onset + 1]
    drop_per_s = round(sum(ln["server"]["conntrack"]["stat_delta"]["drop"] for ln in after)
                       / len(after), 1)
    retrans_per_s = round(sum(ln["client"]["counters_delta"]["TcpExt"]["TCPSynRetrans"]
                              for ln in after) / len(after), 1)
    summary = _summary(
        target="http://198.18.0.2:80/", rate=rate, duration=duration, tot=tot,
        lines=lines, first_error={"ETIMEDOUT": first_err} if first_err else {},
        latency={"connect": {"p50": 0.13, "p90": 0.21, "p99": 1001.9, "p999": 3003.1,
                             "max": 3027.4},
                 "ttfb": {"p50": 0.48, "p90": 0.56, "p99": 1002.3, "p999": 3003.5,
                          "max": 3027.8},
                 "total": {"p50": 0.58, "p90": 0.66, "p99": 1002.4, "p999": 3003.6,
                           "max": 3027.9},
                 "schedule_lag": {"p50": 0.025, "p90": 0.045, "p99": 0.09, "p999": 0.12,
                                  "max": 0.18}},
        sources=["198.18.0.1"],
        findings=[{
            "limit": "conntrack_full", "side": "server", "onset_s": round(onset, 1),
            "severity": "stopped", "title": "conntrack table full",
            "evidence": {"count": ct_max, "max": ct_max, "drop_per_s": drop_per_s,
                         "client_syn_retrans_per_s": retrans_per_s},
            "explanation": (
                "The server's conntrack table reached its maximum of 16,384 entries at "
                "16.4 s (16,384 / 1,000 per s): a cleanly closed connection keeps its "
                "entry for 120 s (nf_conntrack_tcp_timeout_time_wait), so this table "
                "sustains at most 136 new connections/s. From then on the kernel dropped "
                f"new SYNs ({drop_per_s:,.0f} drops/s) without telling the client: connects "
                "waited for "
                "SYN retransmits at 1 s and 3 s and then timed out (ETIMEDOUT)."),
            "fix": ["exempt the benchmark flow from conntrack in both directions (nft "
                    "notrack), or raise nf_conntrack_max together with nf_conntrack_buckets",
                    "nft: table inet tcpchurn_notrack { chain pre { type filter hook "
                    "prerouting priority raw; tcp dport 80 notrack; tcp sport 80 notrack }; "
                    "chain out { type filter hook output priority raw; tcp dport 80 notrack; "
                    "tcp sport 80 notrack } }",
                    "sysctl -w net.netfilter.nf_conntrack_max=262144",
                    "echo 262144 > /sys/module/nf_conntrack/parameters/hashsize"],
            "wrong_fixes": ["tcp_tw_recycle: removed in 4.12 (commit 4396e46187ca)",
                            "tcp_fin_timeout: does not shorten TIME_WAIT (fixed 60 s)"],
        }],
        headroom=[{"limit": "conntrack_full", "side": "server", "peak": ct_max,
                   "capacity": ct_max, "share": 1.0, "rate_to_fill": 136.5},
                  {"limit": "tw_buckets", "side": "server", "peak": 16372,
                   "capacity": 131072, "share": 0.125, "rate_to_fill": 2184.5}],
        config={"target": "http://198.18.0.2:80/", "rate": 1000.0, "duration": 30.0,
                "timeout": 10.0, "close": "server", "arrival": "uniform", "interval": 1.0,
                "lab": "seed-2009"},
    )
    return summary, lines


def healthy(rate: int = 500, duration: int = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run that held: the client collects TIME_WAIT well below every limit."""
    return synthetic(rate=rate, duration=duration, interval=1.0, seed=500)


def synthetic(rate: int, duration: int, interval: float = 1.0,
              seed: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A loopback run against the built-in server with small random variance.

    The client closes first, so it holds TIME_WAIT for 60 s (``TCP_TIMEWAIT_LEN``):
    rate x min(t, 60) sockets, against the 28,232 ports of one destination.
    """
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = []
    tot = {"attempted": 0, "ok": 0, "failed": 0}
    steps = round(duration / interval)
    for i in range(1, steps + 1):
        t = round(i * interval, 6)
        attempted = round(rate * interval) + rng.randint(-1, 1)
        refused = 1 if rng.random() < 0.02 else 0
        ok = attempted - refused
        base = 0.05 + 0.02 * math.sin(t / 7.0) + rng.random() * 0.01
        load = {
            "target_rate": float(rate), "achieved_rate": round(attempted / interval, 3),
            "attempted": attempted, "ok": ok, "failed": refused, "late": rng.randint(0, 2),
            "skipped": 0, "inflight": rng.randint(0, 4),
            "errors": {"ECONNRESET": refused} if refused else {},
            "latency_ms": {"connect": _lat(base, count=ok), "ttfb": _lat(base * 3, count=ok),
                           "total": _lat(base * 3.5, count=ok),
                           "schedule_lag": _lat(0.01 + rng.random() * 0.01, count=attempted)},
        }
        for k in tot:
            tot[k] += int(cast(int, load[k]))
        tw = int(rate * min(t, 60.0)) - rng.randint(0, 5)
        client = kernel_sample(
            t, "host", states=_states(ESTABLISHED=2, TIME_WAIT=tw, LISTEN=1),
            tw_v4mapped=0, ct_count=None, ct_max=None, ct_drop=0, ct_active=False,
            listen=[{"local": "127.0.0.1:8080", "queue": rng.randint(0, 1), "backlog": 4096,
                     "family": 4}],
            destinations=[{"remote": "127.0.0.1:8080", "sockets": tw + 2,
                           "states": {"TIME_WAIT": tw, "ESTABLISHED": 2},
                           "port_range": 28232}],
            fd_open=30 + rng.randint(0, 6), fd_sys=2000 + rng.randint(0, 50),
            counters_delta=None if i == 1 else _counters(active=attempted, passive=attempted),
            first=i == 1)
        if i % 11 == 5:  # kernel variance: a sample where the LISTEN dump came back empty
            client["listen"] = []
            client["fds"]["process"] = None
        lines.append({"t": t, "time": START + t, "load": load, "client": client,
                      "server": None})
    peak_tw = max(int(ln["client"]["sockstat"]["tw"]) for ln in lines)
    summary = _summary(
        target="http://127.0.0.1:8080/", rate=rate, duration=duration, tot=tot, lines=lines,
        first_error={"ECONNRESET": 0.4} if any(ln["load"]["failed"] for ln in lines) else {},
        latency={"connect": {"p50": 0.06, "p90": 0.11, "p99": 0.19, "p999": 0.31, "max": 0.4},
                 "ttfb": {"p50": 0.18, "p90": 0.32, "p99": 0.55, "p999": 0.9, "max": 1.2},
                 "total": {"p50": 0.21, "p90": 0.37, "p99": 0.64, "p999": 1.05, "max": 1.4},
                 "schedule_lag": {"p50": 0.015, "p90": 0.027, "p99": 0.045, "p999": 0.07,
                                  "max": 0.09}},
        sources=["127.0.0.1"], findings=[],
        headroom=[{"limit": "ephemeral_ports", "side": "client", "peak": peak_tw + 2,
                   "capacity": 28232, "share": round((peak_tw + 2) / 28232, 4),
                   "rate_to_fill": 470.5}],
        config={"target": "http://127.0.0.1:8080/", "rate": float(rate),
                "duration": float(duration), "timeout": 5.0, "close": "client",
                "arrival": "uniform", "interval": interval},
    )
    return summary, lines


def _summary(*, target: str, rate: int, duration: int, tot: dict[str, int],
             lines: list[dict[str, Any]], first_error: dict[str, float],
             latency: dict[str, Any], sources: list[str], findings: list[dict[str, Any]],
             headroom: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    late = skipped = 0
    for ln in lines:
        late += ln["load"]["late"]
        skipped += ln["load"]["skipped"]
        for name, n in ln["load"]["errors"].items():
            errors[name] = errors.get(name, 0) + n
    return {
        "tcpchurn_version": "0.1.0", "started": "2026-11-27T10:00:00Z",
        "duration_s": float(duration), "interrupted": False, "target": target,
        "target_rate": float(rate), "achieved_rate": round(tot["attempted"] / duration, 1),
        "connections": {**tot, "late": late, "skipped": skipped},
        "errors": errors, "first_error_s": first_error,
        "latency_ms": latency,
        "latency_from_actual_start_ms": {k: latency[k] for k in ("connect", "ttfb", "total")},
        "environment": {"kernel": "6.18.44", "cpus": 2, "sysctls": SYSCTLS,
                        "rlimit_nofile": [1048576, 1048576], "source_addresses": sources,
                        "conntrack_loaded": True},
        "findings": findings, "headroom": headroom, "config": config,
    }


def write_run(run_dir: Path, summary: dict[str, Any], lines: list[dict[str, Any]]) -> Path:
    """Write ``summary.json`` and ``timeline.jsonl`` into ``run_dir`` (created)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "timeline.jsonl", "w") as f:
        for ln in lines:
            f.write(json.dumps(ln, separators=(",", ":")) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir


def main(argv: list[str]) -> int:
    """Rewrite the checked-in fixtures (or write them under ``argv[0]``)."""
    root = Path(argv[0]) if argv else FIXTURES
    write_run(root / "seed-2009", *seed_2009())
    write_run(root / "healthy", *healthy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
