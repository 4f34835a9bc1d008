"""Turn timeline lines (docs/schema.md §3) into named numeric series for plotting.

Pure: takes dicts, returns arrays. Every value is looked up defensively because a null or
missing field is normal (a module not loaded, a dump skipped this interval, a kernel
without the counter): such a point is simply absent from its series, never a crash
(STYLE.md rule 5).

Series names (``side`` is ``client`` or ``server``)::

    rate.target rate.achieved rate.ok rate.failed  conn.inflight conn.late conn.skipped
    err.<NAME>                         errors per second, by errno name
    lat.<connect|ttfb|total|schedule_lag>.<p50|p90|p99|p999|max>     milliseconds
    <side>.ct.count <side>.ct.max <side>.ct.drop <side>.ct.insert_failed <side>.ct.early_drop
    <side>.tw <side>.tw.limit <side>.tw.v4mapped
    <side>.ports <side>.ports.limit    busiest destination's sockets vs its port range
    <side>.listen <side>.listen.limit  deepest accept queue vs that listener's backlog
    <side>.fds <side>.fds.limit <side>.fds.sys <side>.fds.sys.limit
    <side>.orphan <side>.orphan.limit
    <side>.st.<STATE>                  sockets by TCP state
    <side>.rate.<Counter>              per-second kernel counters (ListenOverflows, ...)
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from tcpchurn.jsonpath import dig as _get

SIDES = ("client", "server")
LATENCIES = ("connect", "ttfb", "total", "schedule_lag")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")
STATES = ("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT", "FIN_WAIT2", "TIME_WAIT")
# Kernel counters whose per-second rate the report draws; each is a symptom of one limit
# (KERNEL.md §1): SYN retransmits = silently dropped SYNs (conntrack, syn queue),
# ListenOverflows = full accept queue, TCPTimeWaitOverflow = tcp_max_tw_buckets reached.
COUNTERS = (("TcpExt", "ListenOverflows"), ("TcpExt", "ListenDrops"),
            ("TcpExt", "TCPSynRetrans"), ("TcpExt", "TCPTimeWaitOverflow"),
            ("Tcp", "ActiveOpens"), ("Tcp", "PassiveOpens"), ("Tcp", "AttemptFails"))


def _num(v: object) -> float | None:
    """``v`` as a float, or ``None`` for null, bool, strings and other non-numbers."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def sysctl(sysctls: Mapping[str, Any] | None, name: str) -> float | None:
    """A numeric sysctl from ``environment.sysctls``, by dotted or short name.

    >>> sysctl({"net.ipv4.tcp_max_tw_buckets": 131072}, "tcp_max_tw_buckets")
    131072.0
    """
    if not sysctls:
        return None
    for key, value in sysctls.items():
        if key == name or key.rsplit(".", 1)[-1] == name or key.rsplit("/", 1)[-1] == name:
            return _num(value)
    return None


class Series:
    """Named ``(t, value)`` series stored as compact float arrays."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[array[float], array[float]]] = {}

    def add(self, name: str, t: float | None, value: object) -> None:
        """Append a point; ``None`` (or a non-number) is skipped, never stored."""
        v = _num(value)
        if v is None or t is None:
            return
        ts, vs = self._data.setdefault(name, (array("d"), array("d")))
        ts.append(t)
        vs.append(v)

    def get(self, name: str) -> tuple[array[float], array[float]]:
        """The points of ``name`` (empty arrays when it never had a value)."""
        return self._data.get(name, (array("d"), array("d")))

    def names(self) -> list[str]:
        """Every series that has at least one point, sorted."""
        return sorted(self._data)

    def peak(self, name: str) -> float | None:
        """The largest value of ``name``, or ``None`` when it has no points."""
        _, vs = self.get(name)
        return max(vs) if vs else None

    def last_t(self) -> float | None:
        """The latest time of any point."""
        ends = [ts[-1] for ts, _ in self._data.values() if ts]
        return max(ends) if ends else None


def extract(lines: Iterable[Mapping[str, Any]],
            sysctls: Mapping[str, Any] | None = None,
            server_sysctls: Mapping[str, Any] | None = None) -> Series:
    """Every plotted series of a timeline.

    ``sysctls`` (the client's, ``environment.sysctls``) and ``server_sysctls``
    (``environment.server_sysctls``) supply the limits that samples do not carry.
    """
    s = Series()
    limits = {"client": (sysctl(sysctls, "tcp_max_tw_buckets"),
                         sysctl(sysctls, "tcp_max_orphans")),
              "server": (sysctl(server_sysctls, "tcp_max_tw_buckets"),
                         sysctl(server_sysctls, "tcp_max_orphans"))}
    prev_t = 0.0
    for line in lines:
        t = _num(line.get("t"))
        if t is None:
            continue
        load = line.get("load")
        # interval_s (schema §2) is exact, also for a shorter last interval; older
        # timelines without it fall back to the distance between lines.
        dt = _num(_get(load, "interval_s")) or (t - prev_t if t > prev_t else None)
        prev_t = t
        _load(s, t, dt, load)
        for side in SIDES:
            sample = line.get(side)
            if isinstance(sample, dict):
                tw_limit, orphan_limit = limits[side]
                if orphan_limit is None and side == "server" and not str(
                        sample.get("where", "")).startswith("remote"):
                    # tcp_max_orphans is global (absent in a child netns, KERNEL.md §2):
                    # a server in a namespace of this host shares the client's value
                    orphan_limit = limits["client"][1]
                _kernel(s, side, t, sample, tw_limit, orphan_limit)
    return s


def _per_s(count: object, dt: object) -> float | None:
    c, d = _num(count), _num(dt)
    if c is None or d is None or d <= 0:
        return None
    return c / d


def _load(s: Series, t: float, dt: float | None, load: object) -> None:
    if not isinstance(load, dict):
        return
    s.add("rate.target", t, load.get("target_rate"))
    s.add("rate.achieved", t, load.get("achieved_rate"))
    s.add("rate.ok", t, _per_s(load.get("ok"), dt))
    s.add("rate.failed", t, _per_s(load.get("failed"), dt))
    for key in ("inflight", "late", "skipped"):
        s.add(f"conn.{key}", t, load.get(key))
    errors = load.get("errors")
    if isinstance(errors, dict):
        for name, n in errors.items():
            s.add(f"err.{name}", t, _per_s(n, dt))
    for kind in LATENCIES:
        for p in PERCENTILES:
            s.add(f"lat.{kind}.{p}", t, _get(load, "latency_ms", kind, p))


def _kernel(s: Series, side: str, t: float, k: dict[str, Any], tw_limit: float | None,
            orphan_limit: float | None) -> None:
    interval = k.get("interval")
    ct = k.get("conntrack")
    # A loaded module with no rule using it tracks nothing (KERNEL.md §1A): its count of
    # 0 against a max of 262,144 would only squash the side that does track.
    if isinstance(ct, dict) and ct.get("loaded") is not False and ct.get("active") is not False:
        s.add(f"{side}.ct.count", t, ct.get("count"))
        s.add(f"{side}.ct.max", t, ct.get("max"))
        for key in ("drop", "insert_failed", "early_drop"):
            s.add(f"{side}.ct.{key}", t, _per_s(_get(ct, "stat_delta", key), interval))
    tw = _get(k, "sockstat", "tw")
    # sockstat's tw counts IPv4 and IPv6 TIME_WAIT together (KERNEL.md §3); the per-state
    # dump is the fallback when a kernel's sockstat lacks it.
    s.add(f"{side}.tw", t, tw if tw is not None else _get(k, "tcp", "states", "TIME_WAIT"))
    s.add(f"{side}.tw.v4mapped", t, _get(k, "tcp", "tw_v4mapped"))
    s.add(f"{side}.tw.limit", t, tw_limit)
    for state in STATES:
        s.add(f"{side}.st.{state}", t, _get(k, "tcp", "states", state))
    s.add(f"{side}.ports", t, _get(k, "destinations", 0, "sockets"))
    s.add(f"{side}.ports.limit", t, _get(k, "destinations", 0, "port_range"))
    _listen(s, side, t, k.get("listen"))
    s.add(f"{side}.fds", t, _get(k, "fds", "process", "open"))
    s.add(f"{side}.fds.limit", t, _get(k, "fds", "process", "soft"))
    s.add(f"{side}.fds.sys", t, _get(k, "fds", "system", "allocated"))
    s.add(f"{side}.fds.sys.limit", t, _get(k, "fds", "system", "max"))
    s.add(f"{side}.orphan", t, _get(k, "sockstat", "orphan"))
    s.add(f"{side}.orphan.limit", t, orphan_limit)
    for group, name in COUNTERS:
        s.add(f"{side}.rate.{name}", t, _per_s(_get(k, "counters_delta", group, name),
                                                interval))
    s.add(f"{side}.rate.SoftnetDropped", t, _per_s(_get(k, "softnet_delta", "dropped"),
                                                   interval))


def _listen(s: Series, side: str, t: float, listen: object) -> None:
    """The deepest accept queue of this sample, against that same listener's backlog."""
    if not isinstance(listen, list):
        return
    best: tuple[float, object] | None = None
    for entry in listen:
        q = _num(_get(entry, "queue"))
        if q is not None and (best is None or q > best[0]):
            best = (q, _get(entry, "backlog"))
    if best is not None:
        s.add(f"{side}.listen", t, best[0])
        s.add(f"{side}.listen.limit", t, best[1])
