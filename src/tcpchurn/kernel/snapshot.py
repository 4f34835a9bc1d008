"""One sample of every kernel table a connection-rate load fills, in one namespace.

:meth:`KernelSnapshot.take` reads the cheap per-second set (KERNEL.md section 4):

* sockstat (TIME_WAIT count for both families: ``tw``), netstat + snmp, conntrack
  (sysctls and ``/proc/net/stat/nf_conntrack``), softnet_stat, fs/file-nr and, for a
  given pid, ``/proc/PID/fd`` and its RLIMIT_NOFILE;
* through sock_diag (:mod:`tcpchurn.kernel.sockdiag`): the LISTEN sockets with their
  accept queues, and a per-state count of every state *except* TIME_WAIT, filtered in
  the kernel.  TIME_WAIT comes from sockstat: dumping 100k TIME_WAIT sockets costs
  40-140 ms, sockstat 10 µs.

With ``detail=True`` it also dumps every state by family (exact TIME_WAIT per family and
the IPv4-mapped ones) and groups sockets by destination (ephemeral port use); with
``proc_net_tcp=True`` it counts ``/proc/net/tcp{,6}`` lines as the 2009 report did.
Both walk the whole shared ehash, so they are on demand, never every second.

:meth:`KernelSnapshot.to_json` produces docs/schema.md section 1 exactly; the ``*_delta``
keys and ``interval`` come from :func:`delta` against the previous sample of the same
namespace (``null`` on the first).
"""

from __future__ import annotations

import threading
import time as _time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from tcpchurn.kernel import sockdiag
from tcpchurn.kernel.conntrack import Conntrack, read_conntrack, stat_delta
from tcpchurn.kernel.counters import Counters, CountersDelta, counters_delta, read_counters
from tcpchurn.kernel.limits import ProcessFds, SystemFds, read_process_fds, read_system_fds
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sockstat import Sockstat, read_sockstat
from tcpchurn.kernel.softnet import Softnet, read_softnet, softnet_delta
from tcpchurn.kernel.sysctl import parse_value
from tcpchurn.kernel.tcptable import ProcNetTcp, read_proc_net_tcp

PORT_RANGE = "sys/net/ipv4/ip_local_port_range"
#: sock_diag states of the cheap sample: all but TIME_WAIT (counted by sockstat).
CHEAP_STATES: tuple[str, ...] = tuple(s for s in sockdiag.STATE_NAMES if s != "TIME_WAIT")
#: conntrack stat columns that only move when this namespace tracks connections.
_TRACKING_COLUMNS = ("insert", "found", "drop", "early_drop", "invalid")


@dataclass(frozen=True)
class KernelSnapshot:
    """Everything read at one instant in one namespace (picklable: crosses processes)."""

    t: float  # seconds since the watch/run started
    time: float  # unix time
    mono: float  # monotonic clock, for intervals
    where: str  # "host", "netns NAME", "pid N"
    sockstat: Sockstat
    counters: Counters
    conntrack: Conntrack
    softnet: Softnet | None
    system_fds: SystemFds
    process_fds: ProcessFds | None
    listen: tuple[sockdiag.Listener, ...] | None  # None: sock_diag unavailable
    states: sockdiag.TcpStates | None  # None: sock_diag unavailable
    detail: bool  # states cover TIME_WAIT by family (a full dump)
    destinations: tuple[sockdiag.Destination, ...] | None = None  # detail only
    port_range: int | None = None  # ports in ip_local_port_range (detail only)
    proc_net_tcp: ProcNetTcp | None = None  # only when asked

    @classmethod
    def take(
        cls,
        procfs: Procfs | None = None,
        *,
        pid: int | None = None,
        detail: bool = False,
        states: bool = True,
        proc_net_tcp: bool = False,
        ruleset: bool = False,
        t0: float | None = None,
        clock: Callable[[], float] = _time.monotonic,
        wall: Callable[[], float] = _time.time,
    ) -> KernelSnapshot:
        """Read one sample of ``procfs``'s namespace.

        ``pid``: the process whose descriptors to count (default: the Procfs's pid, if
        any).  ``detail``: full per-state dumps by family and per-destination grouping.
        ``proc_net_tcp``: also count /proc/net/tcp{,6} (slow with many sockets).
        ``ruleset``: run ``nft list ruleset`` to see whether conntrack is used (slow).
        ``t0``: the ``clock()`` value the watch started at (``t`` is measured from it).
        """
        procfs = procfs if procfs is not None else Procfs()
        inside = _inside(procfs)
        if inside is not None:
            # Another namespace: run the whole sample in its thread, one hop instead of
            # one per file (bench/snapshot_cost.py, empty netns: 3.3 -> 1.7 ms; 0.39 ms
            # with states=False).
            return procfs.call(lambda: cls.take(
                inside, pid=pid, detail=detail, states=states, proc_net_tcp=proc_net_tcp,
                ruleset=ruleset, t0=t0, clock=clock, wall=wall))
        mono, now = clock(), wall()
        ss = read_sockstat(procfs)
        tcp, listen, dests = _sock_diag(procfs, detail, states or detail)
        port_range = _port_range(procfs) if dests is not None else None
        if pid is None:
            pid = procfs.pid
        return cls(
            t=mono - t0 if t0 is not None else 0.0,
            time=now,
            mono=mono,
            where=procfs.label,
            sockstat=ss,
            counters=read_counters(procfs),
            conntrack=read_conntrack(procfs, ruleset=ruleset),
            softnet=read_softnet(procfs),
            system_fds=read_system_fds(procfs),
            process_fds=read_process_fds(pid, procfs) if pid is not None else None,
            listen=listen,
            states=tcp,
            detail=detail and tcp is not None,
            destinations=dests,
            port_range=port_range,
            proc_net_tcp=read_proc_net_tcp(procfs) if proc_net_tcp else None,
        )

    def tcp_states(self) -> dict[str, int | None]:
        """Sockets per state; TIME_WAIT from sockstat unless a full dump was made."""
        if self.states is None:
            # Only sockstat (and maybe the LISTEN dump): other states are unknown.
            out: dict[str, int | None] = dict.fromkeys(sockdiag.STATE_NAMES)
            out["TIME_WAIT"] = self.sockstat.tw
            if self.listen is not None:
                out["LISTEN"] = len(self.listen)
            return out
        total: dict[str, int | None] = {n: self.states.total.get(n, 0)
                                        for n in sockdiag.STATE_NAMES}
        if not self.detail:
            total["TIME_WAIT"] = self.sockstat.tw
        return total

    def to_json(self, earlier: KernelSnapshot | None = None) -> dict[str, object]:
        """docs/schema.md section 1; deltas and ``interval`` against ``earlier``."""
        d = delta(earlier, self) if earlier is not None else None
        full = self.states is not None and self.detail
        ct = self.conntrack.to_json(earlier.conntrack if earlier is not None else None)
        if d is not None and d.conntrack_stat is not None:
            ct["active"] = bool(ct["active"]) or any(
                d.conntrack_stat.get(k) for k in _TRACKING_COLUMNS
            )
        return {
            "t": self.t,
            "time": self.time,
            "where": self.where,
            "interval": d.interval if d is not None else None,
            "tcp": {
                "states": self.tcp_states(),
                "states_v4": dict(self.states.by_family[4]) if full and self.states else None,
                "states_v6": dict(self.states.by_family[6]) if full and self.states else None,
                "tw_v4mapped": self.states.tw_v4mapped if full and self.states else None,
                "source": "sock_diag" if self.states is not None else "sockstat",
            },
            "sockstat": self.sockstat.to_json(),
            "conntrack": ct,
            "counters_delta": d.counters.to_json() if d is not None else None,
            "counters": self.counters.to_json(),
            "listen": [x.to_json() for x in self.listen] if self.listen is not None else None,
            "destinations": (
                [{**x.to_json(), "port_range": self.port_range} for x in self.destinations]
                if self.destinations is not None else None
            ),
            "fds": {
                "system": self.system_fds.to_json(),
                "process": self.process_fds.to_json() if self.process_fds else None,
            },
            "softnet": self.softnet.to_json() if self.softnet is not None else None,
            "softnet_delta": d.softnet if d is not None else None,
            "proc_net_tcp": self.proc_net_tcp.to_json() if self.proc_net_tcp else None,
        }


@dataclass(frozen=True)
class SnapshotDelta:
    """What changed between two samples of one namespace."""

    interval: float
    counters: CountersDelta
    conntrack_stat: dict[str, int | None] | None
    softnet: dict[str, int] | None


def delta(earlier: KernelSnapshot, later: KernelSnapshot) -> SnapshotDelta:
    """Counters, conntrack stats and softnet increases from ``earlier`` to ``later``.

    Both must come from the same namespace (``where``); wrap is handled once, in
    :func:`tcpchurn.kernel.counters.counter_delta`.
    """
    if earlier.where != later.where:
        raise ValueError(f"delta of samples from {earlier.where!r} and {later.where!r}")
    interval = later.mono - earlier.mono
    return SnapshotDelta(
        interval=interval,
        counters=counters_delta(earlier.counters, later.counters, interval),
        conntrack_stat=stat_delta(earlier.conntrack.stat, later.conntrack.stat),
        softnet=softnet_delta(earlier.softnet, later.softnet) if later.softnet else None,
    )


class _Inside(Procfs):
    """The view of a namespace from inside its own thread: reads without a hop.

    Paths are the outer Procfs's (``/proc/thread-self/net/...``, right in that thread);
    :meth:`call` runs directly, since the caller already is in the namespace.  The
    outer Procfs is held weakly: this object is the value of a WeakKeyDictionary keyed
    on it, and a strong reference would keep both (and the netns thread) alive forever.
    """

    def __init__(self, outer: Procfs) -> None:
        super().__init__(root=outer.root)
        self.netns, self.pid = outer.netns, outer.pid
        self._outer = weakref.ref(outer)

    def path(self, rel: str) -> str:
        """The outer Procfs's path for ``rel``."""
        outer = self._outer()
        if outer is None:
            raise RuntimeError(f"{self.label}: the Procfs of this sample was closed")
        return outer.path(rel)


_insides: weakref.WeakKeyDictionary[Procfs, _Inside | None] = weakref.WeakKeyDictionary()
_insides_lock = threading.Lock()


def _inside(procfs: Procfs) -> _Inside | None:
    """The in-thread view of ``procfs`` if it reads another namespace through a thread."""
    if isinstance(procfs, _Inside) or not procfs.is_live:
        return None
    with _insides_lock:
        if procfs not in _insides:
            own = procfs.call(threading.get_ident) == threading.get_ident()
            _insides[procfs] = None if own else _Inside(procfs)
        return _insides[procfs]


def _sock_diag(procfs: Procfs, detail: bool, states: bool) -> tuple[
    sockdiag.TcpStates | None,
    tuple[sockdiag.Listener, ...] | None,
    tuple[sockdiag.Destination, ...] | None,
]:
    """States (all but TIME_WAIT unless ``detail``), listeners and, with ``detail``, the
    top 10 destinations; None where the kernel has no inet_diag (module missing) or a
    fixture has no captured reply.  A full sample walks the ehash once for both its
    states and its destinations (sockdiag.states_and_destinations)."""
    try:
        listen = tuple(sockdiag.listeners(procfs))
    except OSError:  # FileNotFoundError for fixtures, EPROTONOSUPPORT/ENOENT live
        return None, None, None
    if not states:
        return None, listen, None
    if not detail:
        return sockdiag.tcp_states(procfs, CHEAP_STATES), listen, None
    # the server's own connections say nothing of port use (listener_ports)
    tcp, dests = sockdiag.states_and_destinations(
        procfs, top=10, skip_local_ports=sockdiag.listener_ports(listen))
    return tcp, listen, tuple(dests)


def _port_range(procfs: Procfs) -> int | None:
    text = procfs.read_optional(PORT_RANGE)
    if text is None:
        return None
    value = parse_value("ints", text, "/proc/" + PORT_RANGE)
    if isinstance(value, tuple) and len(value) == 2:
        return value[1] - value[0] + 1
    return None

