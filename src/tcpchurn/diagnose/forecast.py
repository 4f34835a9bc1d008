"""Forecast: for a planned load, when each kernel table fills (pure arithmetic).

Given a :class:`Plan` (rate R, duration, who closes first, source addresses, destination
tuples, loopback or not) and the sysctls in force, :func:`forecast` returns per limit the
capacity, the steady-state level, the seconds until it is full (``None``: it never fills)
and the highest rate it sustains.  The arithmetic is KERNEL.md's:

* **conntrack** (§1 A): an entry lives ``nf_conntrack_tcp_timeout_time_wait`` (120 s) after
  a clean close, ``_close`` (10 s) after RST, so the table holds R x T and fills after
  max/R; R_max = max/T.  Bound (§6): a reused 4-tuple reuses its entry, and one client
  address reaches about range/2 distinct 4-tuples per destination when its ports are freed
  at once (server closes first, or RST: ``connect()`` prefers even ports,
  ``__inet_hash_connect``), the whole range when it holds them in TIME_WAIT.  The table
  holds min(R x T, tuples); this is a bound, measured, not a kernel constant.
* **ephemeral ports** (§1 B): only when the client closes first does it hold each port 60 s
  (TCP_TIMEWAIT_LEN), or about ``tcp_tw_reuse_delay`` (1 s) when ``tcp_tw_reuse`` is 1
  (2 on loopback) and timestamps are on: R_max = ports/60 per destination tuple (470/s).
* **TIME_WAIT buckets** (§1 D): R x 60 s sockets on the side that closes first, bounded by
  the 4-tuples as above; R_max = tcp_max_tw_buckets/60 (2184/s).
* **file descriptors** (§1 I): about R x lifetime open at once vs RLIMIT_NOFILE and
  ``fs.file-max``; TIME_WAIT sockets hold none.
* **orphans** (§1 G): R x (about one RTT) against ``tcp_max_orphans``.

>>> rows = forecast(Plan(rate=1000, source_ips=2), Sysctls({"nf_conntrack_max": 16384}))
>>> [(r.limit, r.seconds_to_full) for r in rows][0]
('conntrack_full', 16.4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tcpchurn.diagnose.sysctls import Sysctls

TW_LEN_S = 60.0  # TCP_TIMEWAIT_LEN, include/net/tcp.h: not a sysctl
DEFAULT_CT_TIME_WAIT_S = 120.0  # nf_conntrack_tcp_timeout_time_wait default
DEFAULT_CT_CLOSE_S = 10.0  # nf_conntrack_tcp_timeout_close default
DEFAULT_PORT_RANGE = (32768, 60999)  # ip_local_port_range default: 28232 ports
BASE_FDS = 32  # descriptors a process holds before it opens a connection
CLOSE_MODES = ("server", "client", "reset")


@dataclass(frozen=True)
class Plan:
    """A planned load: what the forecast is for."""

    rate: float
    duration: float = 60.0
    close: str = "server"  # who closes first: server | client | reset (RST, no TIME_WAIT)
    source_ips: int = 1
    dest_tuples: int = 1  # distinct destination ip:port pairs
    loopback: bool = False
    lifetime_s: float = 0.01  # how long one connection stays open (fds, ESTABLISHED)
    rtt_s: float = 0.001  # how long an orphan lives when the peer answers

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON (docs/schema.md §6 ``plan``)."""
        return asdict(self)


@dataclass(frozen=True)
class TableForecast:
    """One limit's forecast (docs/schema.md §6 ``forecast`` entry)."""

    limit: str
    side: str
    capacity: float | None
    steady_state: float
    seconds_to_full: float | None
    max_sustainable_rate: float | None
    why: str

    def fills_within(self, seconds: float) -> bool:
        """True when the table is full before ``seconds`` have passed."""
        return self.seconds_to_full is not None and self.seconds_to_full <= seconds

    def to_json(self) -> dict[str, Any]:
        """The schema's forecast entry."""
        return {
            "limit": self.limit,
            "side": self.side,
            "capacity": self.capacity,
            "steady_state": self.steady_state,
            "seconds_to_full": self.seconds_to_full,
            "max_sustainable_rate": self.max_sustainable_rate,
            "why": self.why,
        }


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def port_count(sysctls: Sysctls) -> int:
    """Usable ephemeral ports: ``ip_local_port_range`` minus reserved ports in it."""
    rng = sysctls.range("ip_local_port_range") or DEFAULT_PORT_RANGE
    return rng[1] - rng[0] + 1 - sysctls.reserved_ports_in(*rng)


def tw_reuse_active(plan: Plan, sysctls: Sysctls) -> bool:
    """Does ``connect()`` reuse TIME_WAIT ports here? 1 = always, 2 = loopback only
    (commit 79e9fed46038); both need tcp_timestamps to prove the new connection is newer."""
    reuse = sysctls.int("tcp_tw_reuse", 2)
    timestamps = sysctls.int("tcp_timestamps", 1)
    return timestamps != 0 and (reuse == 1 or (reuse == 2 and plan.loopback))


def tuple_bound(plan: Plan, sysctls: Sysctls) -> int:
    """Distinct 4-tuples the client can produce (KERNEL.md §6, a measured bound).

    A client that frees its port at once (server closes first, or RST) gets about half
    the range from ``connect()``'s even-port preference; one that holds ports in
    TIME_WAIT walks the whole range.
    """
    ports = port_count(sysctls)
    per_dest = ports if plan.close == "client" else ports // 2
    return per_dest * max(plan.source_ips, 1) * max(plan.dest_tuples, 1)


def _fill(capacity: float | None, steady: float, rate: float) -> float | None:
    if capacity is None or rate <= 0 or steady < capacity:
        return None
    return round(capacity / rate, 1)


def _conntrack(plan: Plan, sysctls: Sysctls, active: bool | None) -> TableForecast:
    cap = sysctls.int("nf_conntrack_max")
    side = "both"
    if cap is None:
        return TableForecast("conntrack_full", side, None, 0.0, None, None,
                             "nf_conntrack is not loaded here: nothing is tracked (check the "
                             "server and any NAT host on the path)")
    if plan.close == "reset":
        hold = float(sysctls.int("nf_conntrack_tcp_timeout_close") or DEFAULT_CT_CLOSE_S)
        state = "CLOSE (RST)"
    else:
        hold = float(sysctls.int("nf_conntrack_tcp_timeout_time_wait") or DEFAULT_CT_TIME_WAIT_S)
        state = "TIME_WAIT"
    unbounded = plan.rate * hold
    tuples = tuple_bound(plan, sysctls)
    steady = min(unbounded, float(tuples))
    bounded = tuples < cap
    why = (f"each connection holds an entry {hold:.0f} s ({state}): {plan.rate:g}/s x "
           f"{hold:.0f} s = {unbounded:,.0f} entries vs nf_conntrack_max {cap:,}; "
           f"bound: about {tuples:,} distinct 4-tuples ({plan.source_ips} source address(es) "
           f"x {plan.dest_tuples} destination(s)), a reused 4-tuple reuses its entry")
    if bounded:
        why += " -- the bound is below the max, so this table does not fill; more source " \
               "addresses or destinations lift it"
    if active is False:
        why += "; nothing is tracked in this namespace (no entries, no ct/NAT rule): the " \
               "figures hold for the server or any NAT host on the path that tracks"
    return TableForecast(
        "conntrack_full", side, float(cap), round(steady, 1),
        None if bounded else _fill(cap, unbounded, plan.rate),
        None if bounded else _r(cap / hold), why,
    )


def _ports(plan: Plan, sysctls: Sysctls) -> TableForecast:
    per_dest = port_count(sysctls)
    tuples = max(plan.source_ips, 1) * max(plan.dest_tuples, 1)
    cap = float(per_dest * tuples)
    if plan.close == "client":
        if tw_reuse_active(plan, sysctls):
            hold = (sysctls.int("tcp_tw_reuse_delay", 1000) or 1000) / 1000.0
            how = f"tcp_tw_reuse lets connect() take a TIME_WAIT port after {hold:g} s"
        else:
            hold = TW_LEN_S
            how = "the client closes first, so TIME_WAIT holds each port 60 s"
        hold += plan.lifetime_s
        steady = plan.rate * hold
        return TableForecast(
            "ephemeral_ports", "client", cap, round(min(steady, cap), 1),
            _fill(cap, steady, plan.rate), _r(cap / hold),
            f"{per_dest:,} ports per destination tuple x {tuples} tuple(s); {how}: "
            f"{plan.rate:g}/s x {hold:g} s = {steady:,.0f} ports in use",
        )
    steady = plan.rate * plan.lifetime_s
    return TableForecast(
        "ephemeral_ports", "client", cap, round(steady, 1), _fill(cap, steady, plan.rate),
        _r(cap / plan.lifetime_s) if plan.lifetime_s > 0 else None,
        f"the {'server closes first' if plan.close == 'server' else 'client resets'}, so the "
        f"client frees each port at close: only open connections hold ports "
        f"({per_dest:,} per destination tuple; connect() prefers even ports)",
    )


def _tw(plan: Plan, sysctls: Sysctls) -> TableForecast:
    cap = sysctls.int("tcp_max_tw_buckets")
    side = "both" if plan.loopback else ("client" if plan.close == "client" else "server")
    if plan.close == "reset":
        return TableForecast("tw_buckets", side, _f(cap), 0.0, None, None,
                             "connections end with RST: no TIME_WAIT at all")
    unbounded = plan.rate * TW_LEN_S
    tuples = tuple_bound(plan, sysctls)
    steady = min(unbounded, float(tuples))
    why = (f"the {plan.close} closes first and holds TIME_WAIT 60 s: {plan.rate:g}/s x 60 s = "
           f"{unbounded:,.0f} sockets vs tcp_max_tw_buckets {cap if cap is not None else '?'}"
           f"; bound: {tuples:,} distinct 4-tuples (a new SYN takes over its 4-tuple's "
           f"TIME_WAIT socket)")
    if side == "server":
        why += "; the server's own tcp_max_tw_buckets applies (a new netns starts at the default)"
    if cap is None:
        return TableForecast("tw_buckets", side, None, round(steady, 1), None, None, why)
    bounded = tuples < cap
    return TableForecast(
        "tw_buckets", side, float(cap), round(steady, 1),
        None if bounded else _fill(cap, unbounded, plan.rate),
        None if bounded else _r(cap / TW_LEN_S), why,
    )


def _f(x: int | None) -> float | None:
    return None if x is None else float(x)


def _fd_process(plan: Plan, rlimit_nofile: tuple[int | None, int | None] | None) -> TableForecast:
    soft, hard = rlimit_nofile if rlimit_nofile else (None, None)
    steady = BASE_FDS + plan.rate * plan.lifetime_s
    why = (f"{plan.rate:g}/s x {plan.lifetime_s:g} s open = {steady - BASE_FDS:,.0f} sockets "
           f"(+{BASE_FDS}) vs RLIMIT_NOFILE soft {soft} (hard {hard}); TIME_WAIT holds no fd")
    if soft is None:
        return TableForecast("fd_process", "client", None, round(steady, 1), None, None, why)
    return TableForecast(
        "fd_process", "client", float(soft), round(steady, 1), _fill(soft, steady, plan.rate),
        _r((soft - BASE_FDS) / plan.lifetime_s) if plan.lifetime_s > 0 else None, why,
    )


def _fd_system(plan: Plan, sysctls: Sysctls, allocated: int | None) -> TableForecast:
    cap = sysctls.int("file-max")
    base = float(allocated or 0)
    steady = base + plan.rate * plan.lifetime_s
    why = f"{base:,.0f} files open now + {plan.rate * plan.lifetime_s:,.0f} sockets vs fs.file-max"
    if cap is None:
        return TableForecast("fd_system", "client", None, round(steady, 1), None, None, why)
    return TableForecast(
        "fd_system", "client", float(cap), round(steady, 1), _fill(cap, steady, plan.rate),
        _r((cap - base) / plan.lifetime_s) if plan.lifetime_s > 0 else None, why,
    )


def _orphans(plan: Plan, sysctls: Sysctls) -> TableForecast:
    cap = sysctls.int("tcp_max_orphans")
    side = "both" if plan.loopback else ("client" if plan.close == "client" else "server")
    steady = plan.rate * plan.rtt_s
    why = (f"a closed socket is orphaned about one RTT ({plan.rtt_s:g} s): {steady:,.1f} at once; "
           f"minutes each when the peer stops answering (tcp_orphan_retries)")
    if cap is None:
        return TableForecast("orphans", side, None, round(steady, 1), None, None, why)
    return TableForecast(
        "orphans", side, float(cap), round(steady, 1), _fill(cap, steady, plan.rate),
        _r(cap / plan.rtt_s) if plan.rtt_s > 0 else None, why,
    )


def forecast(
    plan: Plan,
    sysctls: Sysctls,
    rlimit_nofile: tuple[int | None, int | None] | None = None,
    files_allocated: int | None = None,
    conntrack_active: bool | None = None,
) -> list[TableForecast]:
    """Every table's forecast for ``plan``, the first to fill first."""
    rows = [
        _conntrack(plan, sysctls, conntrack_active),
        _ports(plan, sysctls),
        _tw(plan, sysctls),
        _fd_process(plan, rlimit_nofile),
        _fd_system(plan, sysctls, files_allocated),
        _orphans(plan, sysctls),
    ]

    def key(row: TableForecast) -> tuple[float, float]:
        share = row.steady_state / row.capacity if row.capacity else 0.0
        return (row.seconds_to_full if row.seconds_to_full is not None else float("inf"), -share)

    return sorted(rows, key=key)
