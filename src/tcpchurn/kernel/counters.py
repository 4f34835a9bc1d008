"""``/proc/net/netstat`` and ``/proc/net/snmp``: every TcpExt, IpExt and Tcp counter.

Both files are pairs of lines, a header and its values::

    TcpExt: SyncookiesSent ... ListenOverflows ListenDrops ...
    TcpExt: 0 ... 12 12 ...

    -> Counters({"TcpExt": {"SyncookiesSent": 0, ..., "ListenOverflows": 12, ...}, ...})

Every group present is kept (TcpExt, IpExt, MPTcpExt, Ip, Icmp, Tcp, Udp, ...), so a field
added by a newer kernel appears by itself and one missing on an older kernel is ``None``.

Not everything is a counter: in ``Tcp:`` the RFC 2012 fields ``RtoAlgorithm``, ``RtoMin``,
``RtoMax`` and ``MaxConn`` are constants (``MaxConn`` is printed as -1, "dynamic") and
``CurrEstab`` is a gauge (``net/ipv4/proc.c`` ``snmp_seq_show_tcp_udp``); deltas skip them.

Counter wrap is handled in ONE place, :func:`counter_delta`, used by every module here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs

NETSTAT = "net/netstat"
SNMP = "net/snmp"

#: (group, field) pairs that are not monotonic counters (RFC 2012 / net/ipv4/proc.c).
GAUGES: frozenset[tuple[str, str]] = frozenset(
    {("Tcp", "RtoAlgorithm"), ("Tcp", "RtoMin"), ("Tcp", "RtoMax"), ("Tcp", "MaxConn"),
     ("Tcp", "CurrEstab"), ("Ip", "Forwarding"), ("Ip", "DefaultTTL")}
)


def counter_delta(earlier: int, later: int) -> int:
    """``later - earlier`` for a monotonic kernel counter, across a wrap or a reset.

    MIB counters are ``unsigned long`` (64-bit here, 32-bit on 32-bit kernels) and
    softnet/conntrack per-CPU columns are printed as 32-bit hex; any of them may wrap.
    A value that went down either wrapped at 2**32 or 2**64 (then the wrapped distance
    is small) or was reset (a namespace recreated, a module reloaded: then the counter
    restarted from 0 and ``later`` is the whole delta).

    >>> counter_delta(10, 15), counter_delta(2**32 - 5, 3), counter_delta(1000, 7)
    (5, 8, 7)
    """
    if later >= earlier:
        return later - earlier
    width = 32 if earlier < 2**32 else 64
    wrapped = later + 2**width - earlier
    # A genuine wrap lands close to zero; anything past half the range is a reset.
    return wrapped if wrapped < 2 ** (width - 1) else later


@dataclass(frozen=True)
class Counters:
    """Absolute values of every group in netstat + snmp, at one instant."""

    groups: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def get(self, group: str, name: str) -> int | None:
        """``counters.get("TcpExt", "ListenOverflows")``; None if this kernel lacks it."""
        return self.groups.get(group, {}).get(name)

    def to_json(self, groups: tuple[str, ...] = ("TcpExt", "Tcp", "IpExt")) -> dict[
        str, dict[str, int]
    ]:
        """``{"TcpExt": {...}, "Tcp": {...}, "IpExt": {...}}`` (absent groups omitted)."""
        return {g: dict(self.groups[g]) for g in groups if g in self.groups}


@dataclass(frozen=True)
class CountersDelta:
    """What every counter did between two samples, and over how many seconds."""

    groups: Mapping[str, Mapping[str, int]]
    interval: float | None

    def get(self, group: str, name: str) -> int | None:
        """The increase of one counter; None if either sample lacked it."""
        return self.groups.get(group, {}).get(name)

    def rate(self, group: str, name: str) -> float | None:
        """Increase per second; None without an interval or the counter."""
        value = self.get(group, name)
        if value is None or not self.interval:
            return None
        return value / self.interval

    def to_json(self, groups: tuple[str, ...] = ("TcpExt", "Tcp", "IpExt")) -> dict[
        str, dict[str, int]
    ]:
        """The ``counters_delta`` object of docs/schema.md section 1."""
        return {g: dict(self.groups[g]) for g in groups if g in self.groups}


def parse_counters(text: str, path: str = "/proc/net/netstat") -> dict[str, dict[str, int]]:
    """Header/value line pairs -> ``{"TcpExt": {"ListenOverflows": 3, ...}}``.

    >>> parse_counters("Tcp: MaxConn ActiveOpens\\nTcp: -1 42\\n", "/proc/net/snmp")
    {'Tcp': {'MaxConn': -1, 'ActiveOpens': 42}}
    """
    out: dict[str, dict[str, int]] = {}
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) % 2:
        n, line = lines[-1]
        raise ParseError(path, n, line, "header line without a value line")
    for (hn, header), (vn, values) in zip(lines[::2], lines[1::2], strict=True):
        group, sep, names = header.partition(":")
        if any(k.lstrip("-").isdigit() for k in names.split()):
            raise ParseError(path, hn, header, "expected a header line of names")
        vgroup, vsep, numbers = values.partition(":")
        if not sep or not vsep or group != vgroup or " " in group:
            raise ParseError(path, vn, values, f"expected a {group!r} value line")
        keys, words = names.split(), numbers.split()
        if len(keys) != len(words):
            raise ParseError(
                path, vn, values, f"{len(words)} values for {len(keys)} names in {group}"
            )
        try:
            out[group] = {k: int(w) for k, w in zip(keys, words, strict=True)}
        except ValueError:
            raise ParseError(path, vn, values, "values must be integers") from None
    return out


def parse_netstat_snmp(netstat: str | None, snmp: str | None,
                       netstat_path: str = "/proc/net/netstat",
                       snmp_path: str = "/proc/net/snmp") -> Counters:
    """Both files merged into one :class:`Counters` (a missing file contributes nothing)."""
    groups: dict[str, dict[str, int]] = {}
    if netstat is not None:
        groups.update(parse_counters(netstat, netstat_path))
    if snmp is not None:
        groups.update(parse_counters(snmp, snmp_path))
    return Counters(groups)


def read_counters(procfs: Procfs | None = None) -> Counters:
    """Read netstat and snmp of ``procfs``'s namespace (about 20 µs)."""
    procfs = procfs if procfs is not None else Procfs()
    return parse_netstat_snmp(
        procfs.read_optional(NETSTAT), procfs.read_optional(SNMP),
        procfs.path(NETSTAT), procfs.path(SNMP),
    )


def counters_delta(earlier: Counters, later: Counters, interval: float | None = None
                   ) -> CountersDelta:
    """Per-counter increase from ``earlier`` to ``later`` (gauges and constants skipped).

    A counter present in only one of the two samples is left out: there is nothing to
    subtract.  ``interval`` (seconds) enables :meth:`CountersDelta.rate`.
    """
    groups: dict[str, dict[str, int]] = {}
    for group, now in later.groups.items():
        before = earlier.groups.get(group)
        if before is None:
            continue
        groups[group] = {
            name: counter_delta(before[name], value)
            for name, value in now.items()
            if name in before and (group, name) not in GAUGES
        }
    return CountersDelta(groups, interval)
