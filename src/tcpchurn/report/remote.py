"""Watch another host: scrape its ``tcpchurn watch --prometheus`` exporter into §1 samples.

``tcpchurn run --watch-remote http://server:9464/metrics`` puts the server's kernel tables
next to the client's in the timeline although the server is another machine. The exporter
(:mod:`tcpchurn.report.prometheus`) serves the latest kernel sample as metric families;
:class:`RemoteWatcher` parses them back with prometheus_client's own parser and rebuilds a
docs/schema.md §1 dict, ``"where": "remote URL"``. Absolute counters come back as they
were; the ``*_delta`` keys are differences between consecutive scrapes (a counter that
went down means the exporter restarted: its new value is the increase, as Prometheus'
``rate()`` treats counter resets).

What the exporter does not carry is ``null``: conntrack timeouts, ``fds.system.nr_open``,
the process' pid and hard limit, per-destination states, sockstat ``inuse6``.
"""

from __future__ import annotations

import time as _time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tcpchurn.errors import BadValue, TargetError
from tcpchurn.kernel.counters import GAUGES

OPTION = "--watch-remote"
# Gauges of the exporter (report/prometheus.py) -> where they go in a §1 sample.
SOCKSTAT = {"tcpchurn_tcp_inuse": "inuse", "tcpchurn_tcp_orphans": "orphan",
            "tcpchurn_tcp_time_wait": "tw", "tcpchurn_tcp_allocated": "alloc",
            "tcpchurn_tcp_memory_pages": "mem", "tcpchurn_sockets_used": "sockets_used"}
CONNTRACK = {"tcpchurn_conntrack_entries": "count", "tcpchurn_conntrack_max": "max",
             "tcpchurn_conntrack_buckets": "buckets"}
FDS = {"tcpchurn_fds_allocated": ("system", "allocated"), "tcpchurn_fds_max": ("system", "max"),
       "tcpchurn_process_fds_open": ("process", "open"),
       "tcpchurn_process_fds_limit": ("process", "soft")}
SOFTNET = {"tcpchurn_softnet_processed_total": "processed",
           "tcpchurn_softnet_dropped_total": "dropped",
           "tcpchurn_softnet_time_squeeze_total": "time_squeeze"}
TOP_DESTINATIONS = 10  # schema §1: busiest first, top 10

Fetch = Callable[[str, float], str]
Point = tuple[str, dict[str, str], float]  # sample name, labels, value


def check_url(url: str) -> str:
    """The scrape URL for ``url`` (``/metrics`` when no path is given); BadValue if not http.

    >>> check_url("http://198.18.0.2:9464")
    'http://198.18.0.2:9464/metrics'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadValue(OPTION, url, "give the exporter's URL, e.g. http://HOST:9464/metrics "
                                    "of `tcpchurn watch --prometheus 9464` on that host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadValue(OPTION, url, "the port is not a number 1-65535") from None
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


def http_get(url: str, timeout: float) -> str:
    """GET ``url`` and return its body as text; TargetError for any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # check_url allowed http(s) only
            body: bytes = resp.read()
            return body.decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise TargetError(f"{OPTION}: {url} answered HTTP {exc.code} {exc.reason}: is it a "
                          "`tcpchurn watch --prometheus` exporter?") from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TargetError(f"{OPTION}: cannot scrape {url}: {reason}: check that `tcpchurn "
                          "watch --prometheus PORT` runs there and the port is reachable"
                          ) from None


def parse_points(text: str, url: str = "") -> list[Point]:
    """Every sample of an exposition text as ``(name, labels, value)``."""
    try:
        return [(s.name, dict(s.labels), float(s.value))
                for fam in text_string_to_metric_families(text) for s in fam.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise TargetError(f"{OPTION}: {url or 'the exporter'} did not answer in Prometheus "
                          f"text format ({exc})") from None


def pick_side(points: Iterable[Point], side: str | None) -> str | None:
    """The ``side`` label to read: the one asked, else ``host``, else the first seen."""
    sides = sorted({lbl["side"] for _, lbl, _ in points if "side" in lbl})
    if side is not None:
        return side
    if not sides:
        return None
    return "host" if "host" in sides else sides[0]


def _int(v: float | None) -> int | float | None:
    if v is None:
        return None
    return int(v) if float(v).is_integer() else v


def _delta(now: Mapping[str, Any] | None, before: Mapping[str, Any] | None) -> Any:
    """``now - before`` key by key (nested); a decrease is a reset: the new value counts."""
    if now is None or before is None:
        return None
    out: dict[str, Any] = {}
    for k, v in now.items():
        b = before.get(k)
        if isinstance(v, Mapping):
            out[k] = _delta(v, b if isinstance(b, Mapping) else {})
        elif isinstance(v, int | float) and isinstance(b, int | float):
            out[k] = v - b if v >= b else v
        else:
            out[k] = None
    return out


def _counters_delta(now: Mapping[str, Mapping[str, int]],
                    before: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Per-scrape increases of every counter; gauges and constants (CurrEstab, MaxConn,
    Rto*) have no delta, as in :func:`tcpchurn.kernel.counters.counters_delta`."""
    d = _delta(now, before) or {}
    return {group: {k: v for k, v in fields.items() if (group, k) not in GAUGES}
            for group, fields in d.items()}


def rebuild(points: Iterable[Point], side: str | None = None) -> dict[str, Any]:
    """The §1 fields (without t/time/where/interval/deltas) of one scrape, for ``side``."""
    pts = list(points)
    chosen = pick_side(pts, side)
    states: dict[str, int] = {}
    by_family: dict[str, dict[str, int]] = {}
    sockstat: dict[str, Any] = {k: None for k in (*SOCKSTAT.values(), "inuse6")}
    ct: dict[str, Any] = {"count": None, "max": None, "buckets": None}
    stat: dict[str, int] = {}
    counters: dict[str, dict[str, int]] = {}
    listen: dict[str, dict[str, Any]] = {}
    dests: dict[str, dict[str, Any]] = {}
    fds: dict[str, Any] = {
        "system": {"allocated": None, "max": None, "nr_open": None},
        "process": {"pid": None, "open": None, "soft": None, "hard": None}}
    softnet: dict[str, Any] = {"processed": None, "dropped": None, "time_squeeze": None}
    tw_v4mapped = None
    for name, lbl, value in pts:
        if lbl.get("side") != chosen:
            continue
        v = _int(value)
        if name == "tcpchurn_tcp_sockets":
            states[lbl["state"]] = int(value)
        elif name == "tcpchurn_tcp_sockets_by_family":
            by_family.setdefault(lbl["family"], {})[lbl["state"]] = int(value)
        elif name == "tcpchurn_tcp_time_wait_v4mapped":
            tw_v4mapped = v
        elif name in SOCKSTAT:
            sockstat[SOCKSTAT[name]] = v
        elif name in CONNTRACK:
            ct[CONNTRACK[name]] = v
        elif name == "tcpchurn_conntrack_events_total":
            stat[lbl["event"]] = int(value)
        elif name == "tcpchurn_netstat_total":
            counters.setdefault(lbl["group"], {})[lbl["counter"]] = int(value)
        elif name in ("tcpchurn_listen_queue", "tcpchurn_listen_backlog"):
            entry = listen.setdefault(lbl["local"], {
                "local": lbl["local"], "queue": None, "backlog": None,
                "family": 6 if lbl["local"].startswith("[") else 4})
            entry["queue" if name.endswith("queue") else "backlog"] = v
        elif name in ("tcpchurn_destination_sockets", "tcpchurn_destination_port_range"):
            d = dests.setdefault(lbl["remote"], {"remote": lbl["remote"], "sockets": None,
                                                 "states": None, "port_range": None})
            d["sockets" if name.endswith("sockets") else "port_range"] = v
        elif name in FDS:
            group, key = FDS[name]
            fds[group][key] = v
        elif name in SOFTNET:
            softnet[SOFTNET[name]] = v
    loaded = ct["max"] is not None
    ct.update({"loaded": loaded, "active": bool(ct["count"]) or bool(stat.get("insert")),
               "timeouts": None, "stat": stat or None})
    if fds["process"]["open"] is None and fds["process"]["soft"] is None:
        fds["process"] = None
    ordered = sorted(dests.values(), key=lambda d: -(d["sockets"] or 0))[:TOP_DESTINATIONS]
    return {
        "tcp": {"states": states, "states_v4": by_family.get("4"),
                "states_v6": by_family.get("6"), "tw_v4mapped": tw_v4mapped,
                "source": "sock_diag" if states else "sockstat"},
        "sockstat": sockstat, "conntrack": ct, "counters": counters,
        "listen": list(listen.values()), "destinations": ordered or None, "fds": fds,
        "softnet": softnet if any(v is not None for v in softnet.values()) else None,
    }


class RemoteWatcher:
    """Scrapes one exporter; each :meth:`sample` is a §1 dict with deltas since the last."""

    def __init__(self, url: str, *, side: str | None = None, timeout: float = 2.0,
                 fetch: Fetch = http_get, clock: Callable[[], float] = _time.monotonic,
                 wall: Callable[[], float] = _time.time) -> None:
        self.url = check_url(url)
        self.side = side
        self.timeout = timeout
        self._fetch = fetch
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._prev: dict[str, Any] | None = None
        self._prev_mono: float | None = None

    def sample(self) -> dict[str, Any]:
        """Scrape now and return a docs/schema.md §1 sample (TargetError if unreachable)."""
        text = self._fetch(self.url, self.timeout)
        mono, wall = self._clock(), self._wall()
        body = rebuild(parse_points(text, self.url), self.side)
        prev = self._prev
        ct = body["conntrack"]
        ct["stat_delta"] = _delta(ct["stat"], prev["conntrack"]["stat"]) if prev else None
        out = {"t": round(mono - self._t0, 6), "time": wall, "where": f"remote {self.url}",
               "interval": None if self._prev_mono is None else mono - self._prev_mono,
               **body,
               "counters_delta": _counters_delta(body["counters"], prev["counters"]) if prev
               else None,
               "softnet_delta": _delta(body["softnet"], prev["softnet"]) if prev else None}
        # keep the order of schema §1 for readers of the JSON
        order = ("t", "time", "where", "interval", "tcp", "sockstat", "conntrack",
                 "counters_delta", "counters", "listen", "destinations", "fds", "softnet",
                 "softnet_delta")
        self._prev, self._prev_mono = body, mono
        return {k: out[k] for k in order}
