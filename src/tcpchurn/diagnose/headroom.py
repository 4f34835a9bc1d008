"""Headroom: how full each table got at its peak, and the rate that would fill it.

For every table a run touches (docs/schema.md §4 ``headroom``): the peak level, the
capacity, their ratio, and ``rate_to_fill``, the new-connection rate at which the table
would be full in steady state:

* tables whose entries live a fixed time T after each connection (conntrack: the
  TIME_WAIT timeout, 120 s, or the CLOSE timeout, 10 s, when connections end with RST;
  TIME_WAIT sockets: 60 s; a port in TIME_WAIT: 60 s) fill at ``capacity / T`` per second;
* tables whose level is proportional to the rate (file descriptors, orphans, socket
  memory) fill at ``achieved_rate x capacity / peak``;
* the accept queue depends on the server's accept rate, which a run does not know: null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tcpchurn.diagnose.series import RunData, peak

TW_LEN_S = 60.0  # TCP_TIMEWAIT_LEN, include/net/tcp.h


@dataclass(frozen=True)
class Headroom:
    """One table at its peak (docs/schema.md §4)."""

    limit: str
    side: str
    peak: float | None
    capacity: float | None
    share: float | None
    rate_to_fill: float | None

    def to_json(self) -> dict[str, Any]:
        """The schema's ``headroom`` entry."""
        return {
            "limit": self.limit,
            "side": self.side,
            "peak": self.peak,
            "capacity": self.capacity,
            "share": self.share,
            "rate_to_fill": self.rate_to_fill,
        }


def _row(limit: str, side: str, pk: float | None, cap: float | None,
         rate: float | None) -> Headroom:
    share = round(pk / cap, 4) if pk is not None and cap else None
    return Headroom(limit, side, pk, cap, share, None if rate is None else round(rate, 1))


def _linear(run: RunData, pk: float | None, cap: float | None) -> float | None:
    value = run.summary.get("achieved_rate")
    achieved = float(value) if isinstance(value, (int, float)) and value > 0 else run.rate()
    if not pk or not cap or achieved <= 0:
        return None
    return achieved * cap / pk


def _last_value(run: RunData, side: str, *keys: str) -> float | None:
    for i in reversed(range(len(run))):
        value = run.value(i, side, *keys)
        if value is not None:
            return value
    return None


def compute_headroom(run: RunData) -> list[Headroom]:
    """Every table's peak against its capacity, for each watched side."""
    rows: list[Headroom] = []
    close = run.closes_first()
    sides = ["client"] + (["server"] if run.has_side("server") and not _same(run) else [])
    for side in sides:
        cap = _last_value(run, side, "conntrack", "max")
        if cap is not None and any(
            run.value(i, side, "conntrack", "count") for i in range(len(run))
        ):
            key = "close" if close == "reset" else "time_wait"
            hold = _last_value(run, side, "conntrack", "timeouts", key) or (
                10.0 if close == "reset" else 120.0
            )
            rows.append(_row("conntrack_full", side, peak(run, side, "conntrack", "count"),
                             cap, cap / hold))
        tw_cap = run.sysctls_for(side).int("tcp_max_tw_buckets")
        tw_peak = peak(run, side, "sockstat", "tw")
        if tw_peak is not None:
            rows.append(_row("tw_buckets", side, tw_peak, float(tw_cap) if tw_cap else None,
                             tw_cap / TW_LEN_S if tw_cap else None))
        fd_peak = peak(run, side, "fds", "process", "open")
        fd_cap = _last_value(run, side, "fds", "process", "soft")
        if fd_peak is not None:
            rows.append(_row("fd_process", side, fd_peak, fd_cap, _linear(run, fd_peak, fd_cap)))
    if run.has_side("server"):
        q_peak, q_cap = None, None
        for i in range(len(run)):
            for lst in run.entries(i, "server", "listen"):
                q, b = lst.get("queue"), lst.get("backlog")
                if isinstance(q, (int, float)) and (q_peak is None or q >= q_peak):
                    q_peak = float(q)
                    q_cap = float(b) + 1 if isinstance(b, (int, float)) else None
        if q_peak is not None:
            rows.append(_row("accept_queue", "server", q_peak, q_cap, None))
    rows.extend(_ports(run, close))
    sys_peak = peak(run, "client", "fds", "system", "allocated")
    sys_cap = _last_value(run, "client", "fds", "system", "max")
    if sys_peak is not None:
        rows.append(_row("fd_system", "client", sys_peak, sys_cap,
                         _linear(run, sys_peak, sys_cap)))
    orphan_peak = max((peak(run, s, "sockstat", "orphan") or 0.0 for s in sides), default=0.0)
    orphan_cap = run.sysctls.int("tcp_max_orphans")
    if orphan_cap:
        rows.append(_row("orphans", "client", orphan_peak, float(orphan_cap),
                         _linear(run, orphan_peak, orphan_cap)))
    mem = run.sysctls.ints("tcp_mem")
    mem_peak = peak(run, "client", "sockstat", "mem")
    if mem and len(mem) == 3 and mem_peak is not None:
        rows.append(_row("tcp_mem", "client", mem_peak, float(mem[1]),
                         _linear(run, mem_peak, mem[1])))
    return rows


def _same(run: RunData) -> bool:
    return bool(run.timeline) and run.sample(0, "server") is run.sample(0, "client")


def _ports(run: RunData, close: str) -> list[Headroom]:
    best_sockets, best_range = None, None
    for i in range(len(run)):
        for dest in run.entries(i, "client", "destinations"):
            s = dest.get("sockets")
            if isinstance(s, (int, float)) and (best_sockets is None or s > best_sockets):
                best_sockets = float(s)
                r = dest.get("port_range")
                best_range = float(r) if isinstance(r, (int, float)) else None
    if best_range is None:
        rng = run.sysctls.range("ip_local_port_range")
        if rng is not None:
            best_range = float(rng[1] - rng[0] + 1)
    if best_sockets is None or best_range is None:
        return []
    reuse = run.sysctls.int("tcp_tw_reuse")
    reusing = reuse == 1 or (reuse == 2 and run.loopback)
    delay = (run.sysctls.int("tcp_tw_reuse_delay", 1000) or 1000) / 1000.0
    # Ports are held only by the side that closes first (TIME_WAIT); the client holds
    # them 60 s, or about tcp_tw_reuse_delay when connect() may reuse them.
    rate = best_range / (delay if reusing else TW_LEN_S) if close == "client" else None
    return [_row("ephemeral_ports", "client", best_sockets, best_range, rate)]
