"""Evidence predicates: one function per limit, ``(run, side) -> Evidence | None``.

Each predicate reads a run through :class:`~tcpchurn.diagnose.series.RunData` and returns
the figures that prove the limit was reached (and when), or ``None``.  They are pure and
are referenced by the single table in :mod:`tcpchurn.diagnose.rules`.

The signals are KERNEL.md's catalogue (§1 A-J, §3); thresholds are the constants of
:mod:`tcpchurn.diagnose.series` so that noise (a few refused connections while a server
starts, one slow interval) does not become a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpchurn.diagnose.series import (
    ERROR_MIN,
    ERROR_SHARE,
    FULL_SHARE,
    NEAR_SHARE,
    RunData,
    crossing_time,
    error_hits,
    error_onset_time,
    impact_severity,
    near_syn_step,
    peak,
    per_second,
    sustained_onset,
    syn_steps,
)

TCP_TIMEWAIT_LEN_S = 60.0  # include/net/tcp.h TCP_TIMEWAIT_LEN: fixed, not a sysctl
SLOW_SERVICE_MS = 1000.0  # server think time (ttfb - connect, p50) that makes it "slow"
LAG_P99_MS = 50.0  # generator schedule lag p99 above which it is not keeping time
ACHIEVED_SHARE = 0.99  # achieved below 99% of the target rate: the generator fell behind
SKIPPED_SHARE = 0.005  # more than 0.5% of due connections never started
DUAL_STACK_MIN = 100  # v4-mapped TIME_WAIT sockets worth a note


@dataclass(frozen=True)
class Evidence:
    """What a predicate found: when, how bad, and the figures that show it."""

    onset_s: float
    severity: str  # "stopped" | "degraded" | "warning"
    figures: dict[str, Any] = field(default_factory=dict)


Predicate = Callable[[RunData, str], "Evidence | None"]


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _series(run: RunData, side: str, *keys: str) -> list[float | None]:
    return [run.value(i, side, *keys) for i in range(len(run))]


def _deltas(run: RunData, side: str, group: str, name: str) -> list[float]:
    return [run.delta(i, side, group, name) for i in range(len(run))]


def _counter_hits(run: RunData, values: Sequence[float]) -> list[bool]:
    """A per-interval counter counts when above ERROR_MIN and 1% of attempted."""
    return [
        v >= ERROR_MIN and v >= ERROR_SHARE * run.load_num(i, "attempted")
        for i, v in enumerate(values)
    ]


def _max_latency(run: RunData, first: int, kind: str, pct: str) -> float | None:
    values = [run.latency(i, kind, pct) for i in range(first, len(run))]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _common(run: RunData, first: int) -> dict[str, Any]:
    """Figures every explanation may use: the rate and the client's SYN retransmits."""
    retrans = _deltas(run, "client", "TcpExt", "TCPSynRetrans")
    return {
        "rate": round(run.rate(), 1),
        "syn_retrans_per_s": round(per_second(run, first, retrans), 1),
        "connect_p99_ms": _r(_max_latency(run, first, "connect", "p99")),
        "syn_steps_s": syn_steps(run, first),
    }


def _level(
    run: RunData,
    side: str,
    levels: Sequence[float | None],
    capacities: Sequence[float | None],
    extra_hits: Sequence[bool] | None = None,
) -> tuple[int, float, str] | None:
    """Onset (index, time, "full"|"near") of a table level against its capacity."""
    full = [
        (lv is not None and cap is not None and cap > 0 and lv >= FULL_SHARE * cap)
        or bool(extra_hits and extra_hits[i])
        for i, (lv, cap) in enumerate(zip(levels, capacities, strict=True))
    ]
    for share, label, hits in (
        (FULL_SHARE, "full", full),
        (
            NEAR_SHARE,
            "near",
            [
                lv is not None and cap is not None and cap > 0 and lv >= NEAR_SHARE * cap
                for lv, cap in zip(levels, capacities, strict=True)
            ],
        ),
    ):
        i0 = sustained_onset(hits)
        if i0 is None:
            continue
        cap = capacities[i0]
        cur = levels[i0]
        if cap is not None and cur is not None:
            # Full: when the level reached the capacity (or its own plateau just below).
            target = min(cap, cur) if label == "full" else share * cap
            onset = crossing_time(run, i0, target, levels)
        else:
            onset = run.start(i0)
        return i0, onset, label
    return None


def _last(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# --- A. conntrack ---------------------------------------------------------------------
def conntrack_full(run: RunData, side: str) -> Evidence | None:
    """Conntrack count at ``nf_conntrack_max`` or the ``drop`` column climbing (§1 A)."""
    counts = _series(run, side, "conntrack", "count")
    maxes = _series(run, side, "conntrack", "max")
    drops = [run.value(i, side, "conntrack", "stat_delta", "drop") or 0.0 for i in range(len(run))]
    found = _level(run, side, counts, maxes, [d >= ERROR_MIN for d in drops])
    if found is None:
        return None
    i0, onset, label = found
    cap = _last(maxes)
    timeout = (
        run.value(i0, side, "conntrack", "timeouts", "time_wait")
        or run.sysctls.int("nf_conntrack_tcp_timeout_time_wait")
        or 120.0
    )
    rate = run.rate()
    figures = {
        **_common(run, i0),
        "count": _last(counts),
        "max": cap,
        "buckets": _last(_series(run, side, "conntrack", "buckets")),
        "drop_total": sum(drops),
        "drop_per_s": round(per_second(run, i0, drops), 1),
        "early_drop_total": sum(
            run.value(i, side, "conntrack", "stat_delta", "early_drop") or 0.0
            for i in range(len(run))
        ),
        "timeout_s": timeout,
        "fill_s": _r(cap / rate if cap and rate else None),
        "max_rate": _r(cap / timeout if cap else None),
    }
    if label == "near" or sum(drops) == 0:
        return Evidence(onset, "warning", figures)
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


# --- B/C. ports -----------------------------------------------------------------------
def _port_count(run: RunData) -> float | None:
    rng = run.sysctls.range("ip_local_port_range")
    if rng is not None:
        return float(rng[1] - rng[0] + 1 - run.sysctls.reserved_ports_in(*rng))
    return _busiest_destination(run)[2]


def _busiest_destination(run: RunData) -> tuple[str | None, float | None, float | None]:
    best: tuple[str | None, float | None, float | None] = (None, None, None)
    for i in range(len(run)):
        sample = run.sample(i, "client")
        dests = sample.get("destinations") if sample else None
        if not isinstance(dests, Sequence):
            continue
        for dest in dests:
            if not isinstance(dest, Mapping):
                continue
            sockets = dest.get("sockets")
            if isinstance(sockets, (int, float)) and (best[1] is None or sockets > best[1]):
                rng = dest.get("port_range")
                best = (
                    str(dest.get("remote")),
                    float(sockets),
                    float(rng) if isinstance(rng, (int, float)) else None,
                )
    return best


def _error_evidence(run: RunData, names: Sequence[str]) -> tuple[int, float, float] | None:
    hits = error_hits(run, names)
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    total = sum(run.errors(i, *names) for i in range(len(run)))
    return i0, error_onset_time(run, i0, run.errors(i0, *names)), total


def ephemeral_ports(run: RunData, side: str) -> Evidence | None:
    """``connect()`` failing with EADDRNOTAVAIL, or a destination near the range (§1 B)."""
    ports = _port_count(run)
    remote, sockets, dest_range = _busiest_destination(run)
    figures: dict[str, Any] = {
        "port_range": ports or dest_range,
        "tw_peak": peak(run, "client", "sockstat", "tw"),
        "tw_reuse": run.sysctls.int("tcp_tw_reuse"),
        "destination": remote,
        "dest_sockets": sockets,
    }
    found = _error_evidence(run, ["EADDRNOTAVAIL"])
    rate = run.rate()
    per_tuple = figures["port_range"]
    figures["fill_s"] = _r(per_tuple / rate if per_tuple and rate else None)
    figures["max_rate"] = _r(per_tuple / TCP_TIMEWAIT_LEN_S if per_tuple else None)
    if found is None:
        cap = dest_range or ports
        if sockets is None or not cap or sockets < NEAR_SHARE * cap:
            return None
        return Evidence(0.0, "warning", {**_common(run, 0), **figures, "errors_total": 0,
                                         "errors_per_s": 0.0})
    i0, onset, total = found
    errs = [run.errors(i, "EADDRNOTAVAIL") for i in range(len(run))]
    figures.update(_common(run, i0))
    figures.update(errors_total=total, errors_per_s=round(per_second(run, i0, errs), 1))
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def bind_port_conflict(run: RunData, side: str) -> Evidence | None:
    """``bind()`` failing with EADDRINUSE: a port taken per bind, not per 4-tuple (§1 C)."""
    found = _error_evidence(run, ["EADDRINUSE"])
    if found is None:
        return None
    i0, onset, total = found
    errs = [run.errors(i, "EADDRINUSE") for i in range(len(run))]
    figures = {
        **_common(run, i0),
        "errors_total": total,
        "errors_per_s": round(per_second(run, i0, errs), 1),
        "port_range": _port_count(run),
        "source_addresses": len(
            (run.summary.get("environment") or {}).get("source_addresses") or []
        ) or 1,
    }
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


# --- D. TIME_WAIT buckets -------------------------------------------------------------
def tw_buckets(run: RunData, side: str) -> Evidence | None:
    """``TCPTimeWaitOverflow`` counting: sockets closed without TIME_WAIT (§1 D)."""
    overflow = _deltas(run, side, "TcpExt", "TCPTimeWaitOverflow")
    i0 = sustained_onset([v >= ERROR_MIN for v in overflow])
    tws = _series(run, side, "sockstat", "tw")
    # The client's sysctls are in the summary; for the server only its own plateau tells.
    cap = run.sysctls.int("tcp_max_tw_buckets") if side == "client" or run.loopback else None
    if i0 is None:
        found = _level(run, side, tws, [cap] * len(run)) if cap else None
        if found is None:
            return None
        i0, onset, _ = found
    else:
        onset = run.start(i0)
    rate = run.rate()
    figures = {
        **_common(run, i0),
        "overflow_total": sum(overflow),
        "overflow_per_s": round(per_second(run, i0, overflow), 1),
        "tw_peak": _last(tws),
        "max_tw": cap if cap is not None else _last(tws),
        "fill_s": _r((cap or _last(tws) or 0) / rate if rate else None),
        "max_rate": _r((cap or _last(tws) or 0) / TCP_TIMEWAIT_LEN_S),
    }
    # Mostly harmless (KERNEL.md §1 D): the socket closes without TIME_WAIT.
    return Evidence(onset, "warning", figures)


# --- E/F. listen queues ---------------------------------------------------------------
def _listen_peak(run: RunData, side: str) -> tuple[str | None, float | None, float | None]:
    best: tuple[str | None, float | None, float | None] = (None, None, None)
    for i in range(len(run)):
        sample = run.sample(i, side)
        listeners = sample.get("listen") if sample else None
        if not isinstance(listeners, Sequence):
            continue
        for lst in listeners:
            if not isinstance(lst, Mapping):
                continue
            q = lst.get("queue")
            if isinstance(q, (int, float)) and (best[1] is None or q > best[1]):
                b = lst.get("backlog")
                best = (str(lst.get("local")), float(q), float(b) if b is not None else None)
    return best


def _listen_full(run: RunData, side: str) -> list[bool]:
    """Per interval: a listener's queue at backlog+1, full (``sk_acceptq_is_full`` tests
    ``ack_backlog > max_ack_backlog``, so the queue holds one more than the backlog)."""
    hits = []
    for i in range(len(run)):
        sample = run.sample(i, side)
        listeners = sample.get("listen") if sample else None
        full = False
        for lst in listeners if isinstance(listeners, Sequence) else []:
            q, b = (lst.get("queue"), lst.get("backlog")) if isinstance(lst, Mapping) else (0, 0)
            if isinstance(q, (int, float)) and isinstance(b, (int, float)) and q > b:
                full = True
        hits.append(full)
    return hits


def accept_queue(run: RunData, side: str) -> Evidence | None:
    """``ListenOverflows``, or a LISTEN queue sampled full: the application accepts slower
    than connections arrive (§1 E)."""
    overflows = _deltas(run, side, "TcpExt", "ListenOverflows")
    counted = _counter_hits(run, overflows)
    i0 = sustained_onset([c or f for c, f in zip(counted, _listen_full(run, side), strict=True)])
    if i0 is None:
        return None
    drops = _deltas(run, side, "TcpExt", "ListenDrops")
    listener, queue, backlog = _listen_peak(run, side)
    figures = {
        **_common(run, i0),
        "overflows_total": sum(overflows),
        "overflows_per_s": round(per_second(run, i0, overflows), 1),
        "listen_drops_total": sum(drops),
        "listener": listener,
        "queue_peak": queue,
        "backlog": backlog,
        "somaxconn": run.sysctls.int("somaxconn"),
        "resets_total": sum(run.errors(i, "ECONNRESET") for i in range(len(run))),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


def syn_queue(run: RunData, side: str) -> Evidence | None:
    """SYN queue full: cookies sent (syncookies=1) or requests dropped (=0) (§1 F)."""
    drops = _deltas(run, side, "TcpExt", "TCPReqQFullDrop")
    cookies = [
        max(a, b)
        for a, b in zip(
            _deltas(run, side, "TcpExt", "TCPReqQFullDoCookies"),
            _deltas(run, side, "TcpExt", "SyncookiesSent"),
            strict=True,
        )
    ]
    total = [d + c for d, c in zip(drops, cookies, strict=True)]
    i0 = sustained_onset([v >= ERROR_MIN for v in total])
    if i0 is None:
        return None
    listener, _, backlog = _listen_peak(run, side)
    figures = {
        **_common(run, i0),
        "drops_total": sum(drops),
        "cookies_total": sum(cookies),
        "per_s": round(per_second(run, i0, total), 1),
        "listener": listener,
        "backlog": backlog,
        "syncookies": run.sysctls.int("tcp_syncookies"),
        "max_syn_backlog": run.sysctls.int("tcp_max_syn_backlog"),
    }
    if sum(drops) == 0:
        return Evidence(run.start(i0), "warning", figures)  # cookies: connections still made
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


# --- G/H. orphans and memory ----------------------------------------------------------
def orphans(run: RunData, side: str) -> Evidence | None:
    """sockstat ``orphan`` at ``tcp_max_orphans`` (global) (§1 G)."""
    cap = run.sysctls.int("tcp_max_orphans")
    levels = _series(run, side, "sockstat", "orphan")
    found = _level(run, side, levels, [cap] * len(run))
    if found is None:
        return None
    i0, onset, label = found
    aborts = _deltas(run, side, "TcpExt", "TCPAbortOnMemory")
    figures = {
        **_common(run, i0),
        "orphan_peak": _last(levels),
        "max_orphans": cap,
        "abort_on_memory_total": sum(aborts),
        "orphan_retries": run.sysctls.int("tcp_orphan_retries"),
    }
    if label == "near":
        return Evidence(onset, "warning", figures)
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def tcp_mem(run: RunData, side: str) -> Evidence | None:
    """TCP memory pressure: ``TCPMemoryPressures`` or sockstat ``mem`` above ``tcp_mem[1]``
    (§1 H)."""
    limits = run.sysctls.ints("tcp_mem")
    pressure = float(limits[1]) if limits and len(limits) == 3 else None
    mems = _series(run, side, "sockstat", "mem")
    pressures = _deltas(run, side, "TcpExt", "TCPMemoryPressures")
    hits = [
        p > 0 or (m is not None and pressure is not None and m >= pressure)
        for p, m in zip(pressures, mems, strict=True)
    ]
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    figures = {
        **_common(run, i0),
        "mem_peak_pages": _last(mems),
        "tcp_mem": limits,
        "pressures_total": sum(pressures),
        "abort_on_memory_total": sum(_deltas(run, side, "TcpExt", "TCPAbortOnMemory")),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), severity, figures)


# --- I. file descriptors --------------------------------------------------------------
def _fd_rule(run: RunData, side: str, errno_name: str, scope: str, cap_key: str,
             level_key: str) -> Evidence | None:
    levels = _series(run, side, "fds", scope, level_key)
    caps = _series(run, side, "fds", scope, cap_key)
    found_err = _error_evidence(run, [errno_name]) if side == "client" else None
    found_lvl = _level(run, side, levels, caps)
    if found_err is None and found_lvl is None:
        return None
    if found_err is not None:
        i0, onset, total = found_err
        label = "full"
    else:
        assert found_lvl is not None
        i0, onset, label = found_lvl
        total = 0.0
    figures = {
        **_common(run, i0),
        "open_peak": _last(levels),
        "limit": _last(caps),
        "hard": _last(_series(run, side, "fds", scope, "hard")),
        "errors_total": total,
        "lifetime_ms": _r(_max_latency(run, 0, "total", "p50")),
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
        **_common(run, i0),
        "drops_total": sum(drops),
        "drops_per_s": round(per_second(run, i0, drops), 1),
        "netdev_max_backlog": run.sysctls.int("netdev_max_backlog"),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


# --- the generator and the server -----------------------------------------------------
def generator_saturated(run: RunData, side: str) -> Evidence | None:
    """Our own client could not keep the schedule: behind rate, skipped, or lagging."""
    hits = []
    for i in range(len(run)):
        target = run.load_num(i, "target_rate")
        if target <= 0:
            hits.append(False)
            continue
        due = target * run.length(i)
        lag = run.latency(i, "schedule_lag", "p99")
        hits.append(
            run.load_num(i, "achieved_rate") < ACHIEVED_SHARE * target
            or run.load_num(i, "skipped") > SKIPPED_SHARE * due
            or (lag is not None and lag >= LAG_P99_MS)
        )
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    n = len(run) - i0
    achieved = sum(run.load_num(i, "achieved_rate") for i in range(i0, len(run))) / n
    target = sum(run.load_num(i, "target_rate") for i in range(i0, len(run))) / n
    figures = {
        **_common(run, i0),
        "achieved_rate": round(achieved, 1),
        "target_rate": round(target, 1),
        "achieved_share": round(achieved / target, 3) if target else None,
        "skipped_total": sum(run.load_num(i, "skipped") for i in range(len(run))),
        "late_total": sum(run.load_num(i, "late") for i in range(len(run))),
        "lag_p99_ms": _r(_max_latency(run, i0, "schedule_lag", "p99")),
    }
    severity = "stopped" if target and achieved < 0.5 * target else "degraded"
    return Evidence(run.start(i0), severity, figures)


def server_refused(run: RunData, side: str) -> Evidence | None:
    """ECONNREFUSED (no listener, or a RST from it) sustained, not while it starts."""
    names = ["ECONNREFUSED", "ECONNRESET"]
    found = _error_evidence(run, names)
    if found is None:
        return None
    i0, onset, total = found
    attempted = sum(run.load_num(i, "attempted") for i in range(i0, len(run)))
    figures = {
        **_common(run, i0),
        "refused_total": sum(run.errors(i, "ECONNREFUSED") for i in range(len(run))),
        "reset_total": sum(run.errors(i, "ECONNRESET") for i in range(len(run))),
        "share": round(total / attempted, 3) if attempted else None,
        "abort_on_overflow": run.sysctls.int("tcp_abort_on_overflow"),
    }
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def server_slow(run: RunData, side: str) -> Evidence | None:
    """The server answers, slowly: ttfb minus connect time, or response timeouts."""
    timeouts = error_hits(run, ["RESPONSE_TIMEOUT"])
    service: list[float | None] = []
    for i in range(len(run)):
        ttfb = run.latency(i, "ttfb", "p50")
        conn = run.latency(i, "connect", "p50")
        service.append(None if ttfb is None else ttfb - (conn or 0.0))
    slow = [s is not None and s >= SLOW_SERVICE_MS for s in service]
    # Latency is noisy: a slow interval must be followed by another (strict); timeouts are
    # failures, counted like errors.
    i_lat = sustained_onset(slow, strict=True)
    i_to = sustained_onset(timeouts)
    candidates = [i for i in (i_lat, i_to) if i is not None]
    if not candidates:
        return None
    i0 = min(candidates)
    figures = {
        **_common(run, i0),
        "service_p50_ms": _r(_last(service[i0:])),
        "ttfb_p50_ms": _r(_max_latency(run, i0, "ttfb", "p50")),
        "response_timeouts_total": sum(
            run.errors(i, "RESPONSE_TIMEOUT") for i in range(len(run))
        ),
        "slow_ms": SLOW_SERVICE_MS,
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


def unreachable(run: RunData, side: str) -> Evidence | None:
    """No route, or SYNs unanswered with no table on a watched host to blame."""
    names = ["ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT"]
    found = _error_evidence(run, names)
    stepped = [
        near_syn_step(run.latency(i, "connect", "p90")) is not None for i in range(len(run))
    ]
    i_step = sustained_onset(stepped, strict=True)
    if found is None and i_step is None:
        return None
    if found is not None and (i_step is None or found[0] <= i_step):
        i0, onset, _ = found
    else:
        assert i_step is not None
        i0, onset = i_step, run.start(i_step)
    figures = {
        **_common(run, i0),
        "unreach_total": sum(run.errors(i, "ENETUNREACH", "EHOSTUNREACH") for i in range(len(run))),
        "timeouts_total": sum(run.errors(i, "ETIMEDOUT") for i in range(len(run))),
        "connect_p90_ms": _r(_max_latency(run, i0, "connect", "p90")),
        "server_watched": run.has_side("server"),
    }
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


# --- §3. dual stack -------------------------------------------------------------------
def dual_stack_tw(run: RunData, side: str) -> Evidence | None:
    """TIME_WAIT of IPv4 clients listed in tcp6 (``[::]`` listener, v4-mapped) (§3)."""
    mapped: list[float | None] = []
    for i in range(len(run)):
        v = run.value(i, side, "tcp", "tw_v4mapped")
        if v is None:
            v = run.value(i, side, "proc_net_tcp", "tcp6_v4mapped")
        mapped.append(v)
    tws = _series(run, side, "sockstat", "tw")
    hits = [
        m is not None and m >= DUAL_STACK_MIN and m >= 0.5 * (tw or 0.0)
        for m, tw in zip(mapped, tws, strict=True)
    ]
    i0 = sustained_onset(hits)
    if i0 is None:
        return None
    figures = {
        "rate": round(run.rate(), 1),
        "v4mapped_peak": _last(mapped),
        "tw_peak": _last(tws),
        "tcp_lines": _last(_series(run, side, "proc_net_tcp", "tcp_lines")),
        "tcp6_lines": _last(_series(run, side, "proc_net_tcp", "tcp6_lines")),
    }
    return Evidence(run.start(i0), "warning", figures)
