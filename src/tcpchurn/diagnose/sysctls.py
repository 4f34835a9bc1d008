"""One read-only view of sysctl values for the diagnosis, whatever they came from.

The diagnosis gets sysctls from two places: a live
:class:`tcpchurn.kernel.sysctl.SysctlSnapshot` (``tcpchurn doctor``) and the
``environment.sysctls`` mapping of a run's ``summary.json`` (docs/schema.md §4), where
values may be ints, strings (``"32768\\t60999"``) or lists.  :class:`Sysctls` accepts
either and answers ``int``/range questions by full (``net.ipv4.tcp_tw_reuse``) or short
(``tcp_tw_reuse``) name.

>>> Sysctls({"net.ipv4.ip_local_port_range": "32768\\t60999"}).range("ip_local_port_range")
(32768, 60999)
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Protocol


class SysctlSource(Protocol):
    """Anything with ``get(name)``: a SysctlSnapshot, or a plain mapping."""

    def get(self, name: str, /) -> object: ...


# Short name -> full name, for the sysctls the diagnosis reads (KERNEL.md §0, §2, §7).
FULL_NAMES: dict[str, str] = {
    name.rsplit(".", 1)[1]: name
    for name in (
        "net.ipv4.tcp_tw_recycle",
        "net.ipv4.tcp_tw_reuse",
        "net.ipv4.tcp_tw_reuse_delay",
        "net.ipv4.tcp_max_tw_buckets",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_timestamps",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_orphan_retries",
        "net.ipv4.tcp_rfc1337",
        "net.ipv4.tcp_max_orphans",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.tcp_mem",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_abort_on_overflow",
        "net.ipv4.tcp_syn_retries",
        "net.core.somaxconn",
        "net.core.netdev_max_backlog",
        "net.netfilter.nf_conntrack_max",
        "net.netfilter.nf_conntrack_buckets",
        "net.netfilter.nf_conntrack_count",
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
        "net.netfilter.nf_conntrack_tcp_timeout_close",
        "fs.file-max",
        "fs.nr_open",
    )
}


def full_name(name: str) -> str:
    """``tcp_tw_reuse`` -> ``net.ipv4.tcp_tw_reuse``; full names pass unchanged."""
    return FULL_NAMES.get(name, name)


def _numbers(value: object) -> list[int] | None:
    """Every integer in a sysctl value: ``"4096\\t131072"`` -> ``[4096, 131072]``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, float):
        return [int(value)]
    if isinstance(value, (list, tuple)):
        out: list[int] = []
        for item in value:
            sub = _numbers(item)
            if sub is None:
                return None
            out.extend(sub)
        return out
    if isinstance(value, str):
        try:
            return [int(tok) for tok in value.replace(",", " ").split()]
        except ValueError:
            return None
    return None


class Sysctls:
    """Sysctl values by name, tolerant of where they came from and of absent ones."""

    def __init__(
        self,
        source: SysctlSource | Mapping[str, object] | None = None,
        only: frozenset[str] | None = None,
    ) -> None:
        self._source = source
        self._only = only  # full names this view may answer; None: all

    def restricted(self, names: frozenset[str]) -> Sysctls:
        """The same values, but only for ``names`` (full names); the rest read as absent.

        The diagnosis has the client's sysctls; for a server in another namespace only the
        global ones are the same (KERNEL.md §2), and for a remote server none are.
        """
        return Sysctls(self._source, names if self._only is None else names & self._only)

    def raw(self, name: str) -> object:
        """The value as the source holds it, ``None`` when absent."""
        if self._source is None:
            return None
        if self._only is not None and full_name(name) not in self._only:
            return None
        full = full_name(name)
        value = None
        for key in dict.fromkeys((full, name, full.rsplit(".", 1)[-1])):
            try:
                value = self._source.get(key)
            except KeyError:  # SysctlSnapshot.get raises for names outside its table
                value = None
            if value is not None:
                break
        # A SysctlSnapshot may hand back an entry object rather than the bare value.
        inner = getattr(value, "value", value)
        return inner

    def int(self, name: str, default: builtins.int | None = None) -> builtins.int | None:
        """The first integer of the value (``tcp_tw_reuse`` -> 2), or ``default``."""
        nums = _numbers(self.raw(name))
        return nums[0] if nums else default

    def ints(self, name: str) -> list[builtins.int] | None:
        """Every integer of the value (``tcp_mem`` -> ``[low, pressure, high]``)."""
        return _numbers(self.raw(name))

    def range(self, name: str) -> tuple[builtins.int, builtins.int] | None:
        """A two-number value such as ``ip_local_port_range`` -> ``(32768, 60999)``."""
        nums = _numbers(self.raw(name))
        if nums is None or len(nums) != 2:
            return None
        return (nums[0], nums[1])

    def reserved_ports_in(self, low: builtins.int, high: builtins.int) -> builtins.int:
        """How many ``ip_local_reserved_ports`` fall inside ``[low, high]``.

        >>> Sysctls({"ip_local_reserved_ports": "40000-40009,50000"}).reserved_ports_in(
        ...     32768, 60999)
        11
        """
        value = self.raw("ip_local_reserved_ports")
        if not isinstance(value, str) or not value.strip():
            return 0
        count = 0
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            a, _, b = part.partition("-")
            try:
                lo, hi = builtins.int(a), builtins.int(b or a)
            except ValueError:
                continue
            lo, hi = max(lo, low), min(hi, high)
            count += max(0, hi - lo + 1)
        return count
