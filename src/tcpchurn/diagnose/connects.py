"""Evidence from what connections and listeners experienced: ports (EADDRNOTAVAIL,
EADDRINUSE), the accept and SYN queues, the generator's schedule, and the server's
answers (KERNEL.md §1 B, C, E, F).

Each function is an evidence predicate ``(run, side) -> Evidence | None`` named by the
table in :mod:`tcpchurn.diagnose.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tcpchurn.diagnose.evidence import (
    TCP_TIMEWAIT_LEN_S,
    Evidence,
    common_figures,
    counter_hits,
    deltas,
    error_evidence,
    highest,
    max_latency,
    rounded,
)
from tcpchurn.diagnose.series import (
    ERROR_MIN,
    NEAR_SHARE,
    RunData,
    error_hits,
    impact_severity,
    near_syn_step,
    peak,
    per_second,
    sustained_onset,
)

SLOW_SERVICE_MS = 1000.0  # server think time (ttfb - connect, p50) that makes it "slow"
LAG_P99_MS = 50.0  # generator schedule lag p99 above which it is not keeping time
ACHIEVED_SHARE = 0.99  # achieved below 99% of the target rate: the generator fell behind
SKIPPED_SHARE = 0.005  # more than 0.5% of due connections never started
#: a destination holding this share of its ports while the generator falls behind: the
#: port search is the generator's work (_port_search)
PORT_SEARCH_SHARE = 0.5


# --- B/C. ports -----------------------------------------------------------------------
def _port_count(run: RunData) -> float | None:
    rng = run.sysctls.range("ip_local_port_range")
    if rng is not None:
        return float(rng[1] - rng[0] + 1 - run.sysctls.reserved_ports_in(*rng))
    return _busiest_destination(run)[2]


def _busiest_destination(run: RunData, last: int | None = None
                         ) -> tuple[str | None, float | None, float | None]:
    """(remote, sockets, port range) of the destination with the most sockets in any
    full sample up to interval ``last`` (all when None)."""
    best: tuple[str | None, float | None, float | None] = (None, None, None)
    for i in range(len(run) if last is None else last + 1):
        for dest in run.entries(i, "client", "destinations"):
            sockets = dest.get("sockets")
            if isinstance(sockets, (int, float)) and (best[1] is None or sockets > best[1]):
                rng = dest.get("port_range")
                best = (
                    str(dest.get("remote")),
                    float(sockets),
                    float(rng) if isinstance(rng, (int, float)) else None,
                )
    return best


def _port_search(run: RunData, ports: float | None) -> int | None:
    """The interval from which the generator fell behind while a destination held at
    least :data:`PORT_SEARCH_SHARE` of its ports (in the first full sample of that
    stretch or before), or None.

    connect() looks for a free port by walking the range from a per-destination offset
    (net/ipv4/inet_hashtables.c ``__inet_hash_connect``), and every port it passes that
    is held towards the same destination costs a lookup; a TIME_WAIT port can be taken
    only once ``tcp_tw_reuse_delay`` (1 s) old.  Long before EADDRNOTAVAIL, the search
    becomes the generator's work (KERNEL.md §B: "connect latency and system CPU rise"):
    bare connections closed by the client at 30,000/s to nginx on loopback reached
    14,600/s, 60% of the ports held, connect() ~100 µs of system time each, and the
    generator looked CPU-bound.  More generator CPU would not have helped.
    """
    i0 = sustained_onset(_behind(run))
    if i0 is None:
        return None
    # the first full sample from the onset on (one every --detail-every intervals)
    first = next((i for i in range(i0, len(run)) if run.entries(i, "client", "destinations")),
                 None)
    if first is None:
        return None
    _remote, sockets, dest_range = _busiest_destination(run, first)
    cap = dest_range or ports
    if sockets is None or not cap or sockets < PORT_SEARCH_SHARE * cap:
        return None
    return i0


def ephemeral_ports(run: RunData, side: str) -> Evidence | None:
    """``connect()`` failing with EADDRNOTAVAIL, a destination near the range, or the
    generator behind while a destination holds most of its ports (§1 B)."""
    ports = _port_count(run)
    remote, sockets, dest_range = _busiest_destination(run)
    figures: dict[str, Any] = {
        "port_range": ports or dest_range,
        "tw_peak": peak(run, "client", "sockstat", "tw"),
        "tw_reuse": run.sysctls.int("tcp_tw_reuse"),
        "destination": remote,
        "dest_sockets": sockets,
    }
    found = error_evidence(run, ["EADDRNOTAVAIL"])
    rate = run.rate()
    per_tuple = figures["port_range"]
    figures["fill_s"] = rounded(per_tuple / rate if per_tuple and rate else None)
    figures["max_rate"] = rounded(per_tuple / TCP_TIMEWAIT_LEN_S if per_tuple else None)
    if found is None:
        cap = dest_range or ports
        share = f"{sockets:,.0f} of the {cap:,.0f}" if sockets is not None and cap else ""
        i_search = _port_search(run, ports)
        if i_search is not None:
            severity, achieved, target = _behind_severity(run, i_search)
            symptom = (f"connect() searched the range for a free port: {remote} held {share} "
                       f"ports, and the generator started {achieved:,.0f} of {target:,.0f} "
                       f"connections/s")
            return Evidence(run.start(i_search), severity,
                            {**common_figures(run, i_search), **figures, "errors_total": 0,
                             "errors_per_s": 0.0, "symptom": symptom})
        if sockets is None or not cap or sockets < NEAR_SHARE * cap:
            return None
        return Evidence(0.0, "warning", {**common_figures(run, 0), **figures, "errors_total": 0,
                                         "errors_per_s": 0.0,
                                         "symptom": f"{remote} held {share} ports"})
    i0, onset, total = found
    errs = [run.errors(i, "EADDRNOTAVAIL") for i in range(len(run))]
    figures.update(common_figures(run, i0))
    figures.update(errors_total=total, errors_per_s=round(per_second(run, i0, errs), 1))
    figures["symptom"] = (f"connect() failed with EADDRNOTAVAIL {total:,.0f} times "
                          f"({figures['errors_per_s']:,.0f}/s)")
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


def _source_count(run: RunData) -> int:
    env = run.summary.get("environment")
    sources = env.get("source_addresses") if isinstance(env, Mapping) else None
    return len(sources) if isinstance(sources, list) and sources else 1


def bind_port_conflict(run: RunData, side: str) -> Evidence | None:
    """``bind()`` failing with EADDRINUSE: a port taken per bind, not per 4-tuple (§1 C)."""
    found = error_evidence(run, ["EADDRINUSE"])
    if found is None:
        return None
    i0, onset, total = found
    errs = [run.errors(i, "EADDRINUSE") for i in range(len(run))]
    figures = {
        **common_figures(run, i0),
        "errors_total": total,
        "errors_per_s": round(per_second(run, i0, errs), 1),
        "port_range": _port_count(run),
        "source_addresses": _source_count(run),
    }
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)


# --- E/F. listen queues ---------------------------------------------------------------
def _listen_peak(run: RunData, side: str) -> tuple[str | None, float | None, float | None]:
    best: tuple[str | None, float | None, float | None] = (None, None, None)
    for i in range(len(run)):
        for lst in run.entries(i, side, "listen"):
            q = lst.get("queue")
            if isinstance(q, (int, float)) and (best[1] is None or q > best[1]):
                b = lst.get("backlog")
                backlog = float(b) if isinstance(b, (int, float)) else None
                best = (str(lst.get("local")), float(q), backlog)
    return best


def _listen_full(run: RunData, side: str) -> list[bool]:
    """Per interval: a listener's queue at backlog+1, full (``sk_acceptq_is_full`` tests
    ``ack_backlog > max_ack_backlog``, so the queue holds one more than the backlog)."""
    hits = []
    for i in range(len(run)):
        full = False
        for lst in run.entries(i, side, "listen"):
            q, b = lst.get("queue"), lst.get("backlog")
            if isinstance(q, (int, float)) and isinstance(b, (int, float)) and q > b:
                full = True
        hits.append(full)
    return hits


def accept_queue(run: RunData, side: str) -> Evidence | None:
    """``ListenOverflows``, or a LISTEN queue sampled full: the application accepts slower
    than connections arrive (§1 E)."""
    overflows = deltas(run, side, "TcpExt", "ListenOverflows")
    counted = counter_hits(run, overflows)
    i0 = sustained_onset([c or f for c, f in zip(counted, _listen_full(run, side), strict=True)])
    if i0 is None:
        return None
    drops = deltas(run, side, "TcpExt", "ListenDrops")
    listener, queue, backlog = _listen_peak(run, side)
    figures = {
        **common_figures(run, i0),
        "overflows_total": sum(overflows),
        "overflows_per_s": round(per_second(run, i0, overflows), 1),
        "listen_drops_total": sum(drops),
        "listener": listener,
        "queue_peak": queue,
        "backlog": backlog,
        "somaxconn": run.sysctls_for(side).int("somaxconn"),
        "resets_total": sum(run.errors(i, "ECONNRESET") for i in range(len(run))),
    }
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


def syn_queue(run: RunData, side: str) -> Evidence | None:
    """SYN queue full: cookies sent (syncookies=1) or requests dropped (=0) (§1 F)."""
    drops = deltas(run, side, "TcpExt", "TCPReqQFullDrop")
    cookies = [
        max(a, b)
        for a, b in zip(
            deltas(run, side, "TcpExt", "TCPReqQFullDoCookies"),
            deltas(run, side, "TcpExt", "SyncookiesSent"),
            strict=True,
        )
    ]
    total = [d + c for d, c in zip(drops, cookies, strict=True)]
    i0 = sustained_onset([v >= ERROR_MIN for v in total])
    if i0 is None:
        return None
    listener, _, backlog = _listen_peak(run, side)
    figures = {
        **common_figures(run, i0),
        "drops_total": sum(drops),
        "cookies_total": sum(cookies),
        "per_s": round(per_second(run, i0, total), 1),
        "listener": listener,
        "backlog": backlog,
        "syncookies": run.sysctls_for(side).int("tcp_syncookies"),
        "max_syn_backlog": run.sysctls_for(side).int("tcp_max_syn_backlog"),
    }
    if sum(drops) == 0:
        return Evidence(run.start(i0), "warning", figures)  # cookies: connections still made
    severity = impact_severity(run, i0)
    return Evidence(run.start(i0), "degraded" if severity == "warning" else severity, figures)


# --- the generator and the server -----------------------------------------------------
def _behind(run: RunData) -> list[bool]:
    """Per interval: the generator did not keep the schedule (behind rate, skipped, or
    lagging)."""
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
    return hits


def _behind_severity(run: RunData, i0: int) -> tuple[str, float, float]:
    """(severity, mean achieved, mean target rate) of the intervals from ``i0`` on:
    "stopped" below half the target."""
    n = len(run) - i0
    achieved = sum(run.load_num(i, "achieved_rate") for i in range(i0, len(run))) / n
    target = sum(run.load_num(i, "target_rate") for i in range(i0, len(run))) / n
    return ("stopped" if target and achieved < 0.5 * target else "degraded"), achieved, target


def generator_saturated(run: RunData, side: str) -> Evidence | None:
    """Our own client could not keep the schedule: behind rate, skipped, or lagging."""
    i0 = sustained_onset(_behind(run))
    if i0 is None:
        return None
    severity, achieved, target = _behind_severity(run, i0)
    figures = {
        **common_figures(run, i0),
        "achieved_rate": round(achieved, 1),
        "target_rate": round(target, 1),
        "achieved_share": round(achieved / target, 3) if target else None,
        "skipped_total": sum(run.load_num(i, "skipped") for i in range(len(run))),
        "late_total": sum(run.load_num(i, "late") for i in range(len(run))),
        "lag_p99_ms": rounded(max_latency(run, i0, "schedule_lag", "p99")),
    }
    return Evidence(run.start(i0), severity, figures)


def server_refused(run: RunData, side: str) -> Evidence | None:
    """ECONNREFUSED (no listener, or a RST from it) sustained, not while it starts."""
    names = ["ECONNREFUSED", "ECONNRESET"]
    found = error_evidence(run, names)
    if found is None:
        return None
    i0, onset, total = found
    attempted = sum(run.load_num(i, "attempted") for i in range(i0, len(run)))
    figures = {
        **common_figures(run, i0),
        "refused_total": sum(run.errors(i, "ECONNREFUSED") for i in range(len(run))),
        "reset_total": sum(run.errors(i, "ECONNRESET") for i in range(len(run))),
        "share": round(total / attempted, 3) if attempted else None,
        "abort_on_overflow": run.sysctls_for(side).int("tcp_abort_on_overflow"),
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
        **common_figures(run, i0),
        "service_p50_ms": rounded(highest(service[i0:])),
        "ttfb_p50_ms": rounded(max_latency(run, i0, "ttfb", "p50")),
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
    found = error_evidence(run, names)
    stepped = [
        near_syn_step(run.latency_actual(i, "connect", "p90")) is not None
        for i in range(len(run))
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
        **common_figures(run, i0),
        "unreach_total": sum(run.errors(i, "ENETUNREACH", "EHOSTUNREACH") for i in range(len(run))),
        "timeouts_total": sum(run.errors(i, "ETIMEDOUT") for i in range(len(run))),
        "connect_p90_ms": rounded(max_latency(run, i0, "connect", "p90", actual=True)),
        "server_watched": run.has_side("server"),
    }
    severity = impact_severity(run, i0)
    return Evidence(onset, "degraded" if severity == "warning" else severity, figures)
