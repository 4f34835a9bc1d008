"""Prometheus metrics: kernel samples (docs/schema.md §1) as metric families.

One :class:`~prometheus_client.CollectorRegistry` per process (:func:`make_registry`),
served on ``127.0.0.1:PORT`` by :func:`start_server`.  Kernel metrics come from the
latest §1 sample of each *side* (``client``/``server`` in a run, the namespace label in
``tcpchurn watch``): :class:`KernelMetrics` keeps that sample and a collector turns it
into families at scrape time, so a scrape always sees one consistent sample and absolute
kernel counters are exported as counters (``*_total``) without ``inc()`` bookkeeping.

To add metrics from another source (the load), write a function ``sample -> families``
like :func:`kernel_families` and register a collector for it with
:func:`register_source`; names follow https://prometheus.io/docs/practices/naming/
(``tcpchurn_`` prefix, base units, ``_total`` for counters).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tcpchurn.jsonpath import dig as _get

Sample = Mapping[str, Any]
FamiliesFn = Callable[[str, Sample], Iterable[Metric]]


def make_registry() -> CollectorRegistry:
    """A fresh registry (not the global default one: tests and runs stay apart)."""
    return CollectorRegistry(auto_describe=False)


def start_server(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"
) -> Callable[[], None]:
    """Serve ``registry`` on http://``addr``:``port``/metrics; returns a stop function.

    Loopback by default: the exporter shows kernel internals of this host, so exposing
    it to a network (for ``run --watch-remote`` from the client host) is the user's
    explicit choice. Raises ``OSError`` (EADDRINUSE, EACCES, EADDRNOTAVAIL) when the
    address cannot be bound.
    """
    server, thread = start_http_server(port, addr=addr, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=1.0)

    return stop


class _SourceCollector(Collector):
    """Builds families from the latest sample of every side at scrape time."""

    def __init__(self, families: FamiliesFn) -> None:
        self.families = families
        self.latest: dict[str, Sample] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            latest = dict(self.latest)
        merged: dict[str, Metric] = {}
        for side, sample in sorted(latest.items()):
            for fam in self.families(side, sample):
                have = merged.get(fam.name)
                if have is None:
                    merged[fam.name] = fam
                else:  # the same family from two sides: one family, two label sets
                    have.samples.extend(fam.samples)
        yield from merged.values()


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _SourceCollector]]
_collectors = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def register_source(
    registry: CollectorRegistry, name: str, families: FamiliesFn
) -> _SourceCollector:
    """The collector of source ``name`` in ``registry`` (registered on first use)."""
    with _collectors_lock:
        per_registry = _collectors.setdefault(registry, {})
        collector = per_registry.get(name)
        if collector is None:
            collector = _SourceCollector(families)
            registry.register(collector)
            per_registry[name] = collector
        return collector


class KernelMetrics:
    """The kernel metrics of one side; :meth:`update` with each new §1 sample."""

    def __init__(self, registry: CollectorRegistry, side: str = "host") -> None:
        self.side = side
        self._collector = register_source(registry, "kernel", kernel_families)

    def update(self, sample: Sample) -> None:
        """Export ``sample`` (a ``KernelSnapshot.to_json()`` dict) from now on."""
        with self._collector.lock:
            self._collector.latest[self.side] = sample


# ------------------------------------------------------------------- the families


class _Families:
    """Collects families by name while walking one sample (labels: side + extra)."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.out: dict[str, Metric] = {}

    def _family(
        self, kind: Callable[..., Metric], name: str, doc: str, labels: tuple[str, ...]
    ) -> Metric:
        fam = self.out.get(name)
        if fam is None:
            fam = kind(name, doc, labels=["side", *labels])
            self.out[name] = fam
        return fam

    def gauge(self, name: str, doc: str, value: object, **labels: str) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            fam = self._family(GaugeMetricFamily, name, doc, tuple(labels))
            fam.add_metric([self.side, *labels.values()], float(value))  # type: ignore[attr-defined]

    def counter(self, name: str, doc: str, value: object, **labels: str) -> None:
        """``name`` without ``_total``: prometheus_client appends it."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            fam = self._family(CounterMetricFamily, name, doc, tuple(labels))
            fam.add_metric([self.side, *labels.values()], float(value))  # type: ignore[attr-defined]


# Fields of the sockstat "TCP:" line (net/ipv4/proc.c sockstat_seq_show).
_SOCKSTAT = {
    "inuse": ("tcpchurn_tcp_inuse", "TCP sockets in use (sockstat inuse), this netns."),
    "orphan": ("tcpchurn_tcp_orphans", "Orphaned TCP sockets (sockstat orphan, global)."),
    "tw": ("tcpchurn_tcp_time_wait", "TIME_WAIT sockets, IPv4 and IPv6 (sockstat tw)."),
    "alloc": ("tcpchurn_tcp_allocated", "Allocated TCP sockets (sockstat alloc, global)."),
    "mem": ("tcpchurn_tcp_memory_pages", "Pages used by TCP buffers (sockstat mem, global)."),
    "sockets_used": ("tcpchurn_sockets_used", "Sockets of all kinds in use (sockstat)."),
}
# The TcpExt/Tcp counters that name a limit (KERNEL.md), exported under their own name.
_NAMED_COUNTERS = {
    ("TcpExt", "ListenOverflows"): (
        "tcpchurn_listen_overflows",
        "Connections dropped because an accept queue was full (TcpExtListenOverflows).",
    ),
    ("TcpExt", "ListenDrops"): (
        "tcpchurn_listen_drops",
        "SYNs or final ACKs dropped at a listener for any reason (TcpExtListenDrops).",
    ),
    ("TcpExt", "TCPTimeWaitOverflow"): (
        "tcpchurn_tcp_time_wait_overflows",
        "Sockets closed without TIME_WAIT: tcp_max_tw_buckets reached.",
    ),
    ("Tcp", "ActiveOpens"): ("tcpchurn_tcp_active_opens", "connect() calls that sent a SYN."),
    ("Tcp", "PassiveOpens"): ("tcpchurn_tcp_passive_opens", "Connections accepted by listeners."),
}


def kernel_families(side: str, sample: Sample) -> list[Metric]:
    """The metric families of one §1 kernel sample, labelled ``side``.

    >>> [f.name for f in kernel_families("host", {"conntrack": {"count": 3}})]
    ['tcpchurn_conntrack_entries']
    """
    f = _Families(side)
    for state, n in (_get(sample, "tcp", "states") or {}).items():
        f.gauge("tcpchurn_tcp_sockets", "TCP sockets by state (sock_diag).", n, state=state)
    for fam_key, family in (("states_v4", "4"), ("states_v6", "6")):
        for state, n in (_get(sample, "tcp", fam_key) or {}).items():
            f.gauge(
                "tcpchurn_tcp_sockets_by_family",
                "TCP sockets by state and address family (sock_diag).",
                n,
                family=family,
                state=state,
            )
    f.gauge(
        "tcpchurn_tcp_time_wait_v4mapped",
        "TIME_WAIT sockets in tcp6 with ::ffff: IPv4-mapped addresses.",
        _get(sample, "tcp", "tw_v4mapped"),
    )
    for key, (name, doc) in _SOCKSTAT.items():
        f.gauge(name, doc, _get(sample, "sockstat", key))

    ct = _get(sample, "conntrack") or {}
    f.gauge(
        "tcpchurn_conntrack_entries", "Conntrack entries (nf_conntrack_count).", ct.get("count")
    )
    f.gauge("tcpchurn_conntrack_max", "Conntrack table limit (nf_conntrack_max).", ct.get("max"))
    f.gauge(
        "tcpchurn_conntrack_buckets",
        "Conntrack hash size (nf_conntrack_buckets).",
        ct.get("buckets"),
    )
    for key, n in (ct.get("stat") or {}).items():
        f.counter(
            "tcpchurn_conntrack_events",
            "Conntrack statistics summed over CPUs (/proc/net/stat/nf_conntrack).",
            n,
            event=key,
        )

    counters = _get(sample, "counters") or {}
    for (group, field), (name, doc) in _NAMED_COUNTERS.items():
        f.counter(name, doc, _get(counters, group, field))
    for group in ("TcpExt", "Tcp"):
        for field, n in (counters.get(group) or {}).items():
            f.counter(
                "tcpchurn_netstat",
                "Every TcpExt/Tcp counter of /proc/net/netstat and /proc/net/snmp.",
                n,
                group=group,
                counter=field,
            )

    for lst in _get(sample, "listen") or []:
        f.gauge(
            "tcpchurn_listen_queue",
            "Connections waiting for accept() (sock_diag idiag_rqueue).",
            lst.get("queue"),
            local=str(lst.get("local")),
        )
        f.gauge(
            "tcpchurn_listen_backlog",
            "Accept queue limit: min(listen() backlog, somaxconn).",
            lst.get("backlog"),
            local=str(lst.get("local")),
        )
    for dest in _get(sample, "destinations") or []:
        remote = str(dest.get("remote"))
        f.gauge(
            "tcpchurn_destination_sockets",
            "Sockets (local ports) towards one remote ip:port.",
            dest.get("sockets"),
            remote=remote,
        )
        f.gauge(
            "tcpchurn_destination_port_range",
            "Ephemeral ports available per destination (ip_local_port_range).",
            dest.get("port_range"),
            remote=remote,
        )

    f.gauge(
        "tcpchurn_fds_allocated",
        "File handles allocated system-wide (fs/file-nr).",
        _get(sample, "fds", "system", "allocated"),
    )
    f.gauge(
        "tcpchurn_fds_max",
        "System-wide file handle limit (fs.file-max).",
        _get(sample, "fds", "system", "max"),
    )
    f.gauge(
        "tcpchurn_process_fds_open",
        "File descriptors open in the watched process.",
        _get(sample, "fds", "process", "open"),
    )
    f.gauge(
        "tcpchurn_process_fds_limit",
        "RLIMIT_NOFILE soft limit of the watched process.",
        _get(sample, "fds", "process", "soft"),
    )

    for key, name, doc in (
        ("processed", "tcpchurn_softnet_processed", "Packets processed by the input backlog."),
        ("dropped", "tcpchurn_softnet_dropped", "Packets dropped: netdev_max_backlog full."),
        ("time_squeeze", "tcpchurn_softnet_time_squeeze", "NAPI runs out of budget or time."),
    ):
        f.counter(name, doc, _get(sample, "softnet", key))
    return list(f.out.values())
