"""Evidence from kernel tables and counters: conntrack, TIME_WAIT, orphans, memory,
file descriptors, the input backlog, and where TIME_WAIT is listed (KERNEL.md §1, §3).

Each function is an evidence predicate ``(run, side) -> Evidence | None`` named by the
table in :mod:`tcpchurn.diagnose.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tcpchurn.diagnose.evidence import (
    TCP_TIMEWAIT_LEN_S,
    Evidence,
    common_figures,
    deltas,
    error_evidence,
    highest,
    level_onset,
    max_latency,
    rounded,
    series_of,
)
from tcpchurn.diagnose.series import (
    ERROR_MIN,
    RunData,
    impact_severity,
    per_second,
    sustained_onset,
)

DUAL_STACK_MIN = 100  # v4-mapped TIME_WAIT sockets worth a note


# --- A. conntrack ---------------------------------------------------------------------
def conntrack_full(run: RunData, side: str) -> Evidence | None:
    """Conntrack count at ``nf_conntrack_max`` or the ``drop`` column climbing (§1 A)."""
    counts = series_of(run, side, "conntrack", "count")
    maxes = series_of(run, side, "conntrack", "max")
    drops = [run.value(i, side, "conntrack", "stat_delta", "drop") or 0.0 for i in range(len(run))]
    found = level_onset(run, counts, maxes, [d >= ERROR_MIN for d in drops])
    if found is None:
        return None
    i0, onset, label = found
    cap = highest(maxes)
    timeout = (
        run.value(i0, side, "conntrack", "timeouts", "time_wait")
        or run.sysctls_for(side).int("nf_conntrack_tcp_timeout_time_wait")
        or 120.0
    )
    rate = run.rate()
    figures = {
        **common_figures(run, i0),
        "count": highest(counts),
        "max": cap,
        "buckets": highest(series_of(run, side, "conntrack", "buckets")),
        "drop_total": sum(drops),
        "drop_per_s": round(per_second(run, i0, drops), 1),
        "early_drop_total": sum(
            run.value(i, side, "conntrack", "stat_delta", "early_drop") or 0.0
            for i in range(len(run))
        ),
        "timeout_s": timeout,
        "fill_s": rounded(cap / rate if cap and rate else None),
        "max_rate": rounded(cap / timeout if cap else None),
    }
    if label == "near" or sum(drops) == 0:
        return Evidence(onset, "warning", figures)
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


# --- D. TIME_WAIT buckets -------------------------------------------------------------
def tw_buckets(run: RunData, side: str) -> Evidence | None:
    """``TCPTimeWaitOverflow`` counting: sockets closed without TIME_WAIT (§1 D)."""
    overflow = deltas(run, side, "TcpExt", "TCPTimeWaitOverflow")
    i0 = sustained_onset([v >= ERROR_MIN for v in overflow])
    tws = series_of(run, side, "sockstat", "tw")
    # The client's sysctls are in the summary; for the server only its own plateau tells.
    cap = run.sysctls_for(side).int("tcp_max_tw_buckets")
    if i0 is None:
        found = level_onset(run, tws, [cap] * len(run)) if cap else None
        if found is None:
            return None
        i0, onset, _ = found
    else:
        onset = run.start(i0)
    rate = run.rate()
    figures = {
        **common_figures(run, i0),
        "overflow_total": sum(overflow),
        "overflow_per_s": round(per_second(run, i0, overflow), 1),
        "tw_peak": highest(tws),
        "max_tw": cap if cap is not None else highest(tws),
        "fill_s": rounded((cap or highest(tws) or 0) / rate if rate else None),
        "max_rate": rounded((cap or highest(tws) or 0) / TCP_TIMEWAIT_LEN_S),
    }
    # Mostly harmless (KERNEL.md §1 D): the socket closes without TIME_WAIT.
    return Evidence(onset, "warning", figures)


# --- G/H. orphans and memory ----------------------------------------------------------
def orphans(run: RunData, side: str) -> Evidence | None:
    """sockstat ``orphan`` at ``tcp_max_orphans`` (global) (§1 G)."""
    cap = run.sysctls_for(side).int("tcp_max_orphans")
    levels = series_of(run, side, "sockstat", "orphan")
    found = level_onset(run, levels, [cap] * len(run))
    if found is None:
        return None
    i0, onset, label = found
    aborts = deltas(run, side, "TcpExt", "TCPAbortOnMemory")
    figures = {
        **common_figures(run, i0),
        "orphan_peak": highest(levels),
        "max_orphans": cap,
        "abort_on_memory_total": sum(aborts),
        "orphan_retries": run.sysctls_for(side).int("tcp_orphan_retries"),
    }
    if label == "near":
        return Evidence(onset, "warning", figures)
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def tcp_mem(run: RunData, side: str) -> Evidence | None:
    """TCP memory pressure: ``TCPMemoryPressures`` or sockstat ``mem`` above ``tcp_mem[1]``
    (§1 H)."""
    limits = run.sysctls_for(side).ints("tcp_mem")
    pressure = float(limits[1]) if limits and len(limits) == 3 else None
    mems = series_of(run, side, "sockstat", "mem")
    pressures = deltas(run, side, "TcpExt", "TCPMemoryPressures")
    hits = [
        p > 0 or (m is not None and pressure is not None and m >= pressure)
        for p, m in zip(pressures, mems, strict=True)
    ]
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    figures = {
        **common_figures(run, i0),
        "mem_peak_pages": highest(mems),
        "tcp_mem": limits,
        "pressures_total": sum(pressures),
        "abort_on_memory_total": sum(deltas(run, side, "TcpExt", "TCPAbortOnMemory")),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), severity, figures)


# --- I. file descriptors --------------------------------------------------------------
def _env_rlimit(run: RunData) -> tuple[float | None, float | None]:
    env = run.summary.get("environment")
    rl = env.get("rlimit_nofile") if isinstance(env, Mapping) else None
    if isinstance(rl, list) and len(rl) == 2:
        soft, hard = rl
        return (float(soft) if isinstance(soft, (int, float)) else None,
                float(hard) if isinstance(hard, (int, float)) else None)
    return None, None


def _fd_rule(run: RunData, side: str, errno_name: str, scope: str, cap_key: str,
             level_key: str) -> Evidence | None:
    levels = series_of(run, side, "fds", scope, level_key)
    caps = series_of(run, side, "fds", scope, cap_key)
    found_err = error_evidence(run, [errno_name]) if side == "client" else None
    found_lvl = level_onset(run, levels, caps)
    if found_err is None and found_lvl is None:
        return None
    if found_err is not None:
        i0, onset, total = found_err
        label = "full"
    else:
        assert found_lvl is not None
        i0, onset, label = found_lvl
        total = 0.0
    limit, hard = highest(caps), highest(series_of(run, side, "fds", scope, "hard"))
    if scope == "process" and side == "client" and limit is None:
        limit, hard = _env_rlimit(run)  # the sampler may not see the load's own processes
    figures = {
        **common_figures(run, i0),
        "open_peak": highest(levels),
        "limit": limit,
        "hard": hard,
        "errors_total": total,
        "lifetime_ms": rounded(max_latency(run, 0, "total", "p50")),
    }
    if label == "near":
        return Evidence(onset, "warning", figures)
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def fd_process(run: RunData, side: str) -> Evidence | None:
    """EMFILE: the process reached RLIMIT_NOFILE (§1 I)."""
    return _fd_rule(run, side, "EMFILE", "process", "soft", "open")


def fd_system(run: RunData, side: str) -> Evidence | None:
    """ENFILE: the system reached ``fs.file-max`` (§1 I)."""
    return _fd_rule(run, side, "ENFILE", "system", "max", "allocated")


# --- J. input backlog -----------------------------------------------------------------
def netdev_backlog(run: RunData, side: str) -> Evidence | None:
    """Per-CPU input backlog drops (``softnet_stat`` column 2) (§1 J)."""
    drops = [run.value(i, side, "softnet_delta", "dropped") or 0.0 for i in range(len(run))]
    i0 = sustained_onset([d >= ERROR_MIN for d in drops])
    if i0 is None:
        return None
    figures = {
        **common_figures(run, i0),
        "drops_total": sum(drops),
        "drops_per_s": round(per_second(run, i0, drops), 1),
        "netdev_max_backlog": run.sysctls_for(side).int("netdev_max_backlog"),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


# --- §3. dual stack -------------------------------------------------------------------
def dual_stack_tw(run: RunData, side: str) -> Evidence | None:
    """TIME_WAIT of IPv4 clients listed in tcp6 (``[::]`` listener, v4-mapped) (§3)."""
    mapped: list[float | None] = []
    for i in range(len(run)):
        v = run.value(i, side, "tcp", "tw_v4mapped")
        if v is None:
            v = run.value(i, side, "proc_net_tcp", "tcp6_v4mapped")
        mapped.append(v)
    tws = series_of(run, side, "sockstat", "tw")
    # Per-family counts come only with the full socket dumps, taken every few intervals
    # (they walk the whole ehash, KERNEL.md §4); between dumps the last answer stands.
    hits: list[bool] = []
    for m, tw in zip(mapped, tws, strict=True):
        if m is None:
            hits.append(bool(hits and hits[-1]))
        else:
            hits.append(m >= DUAL_STACK_MIN and m >= 0.5 * (tw or 0.0))
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    figures = {
        "rate": round(run.rate(), 1),
        "v4mapped_peak": highest(mapped),
        "tw_peak": highest(tws),
        "tcp_lines": highest(series_of(run, side, "proc_net_tcp", "tcp_lines")),
        "tcp6_lines": highest(series_of(run, side, "proc_net_tcp", "tcp6_lines")),
    }
    return Evidence(run.start(i0), "warning", figures)
