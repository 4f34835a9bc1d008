"""``/proc/net/sockstat`` and ``sockstat6``: socket counts, the cheapest TIME_WAIT gauge.

Raw -> decoded::

    sockets: used 119
    TCP: inuse 102 orphan 6 tw 14063 alloc 102 mem 221
    TCP6: inuse 3                                   (from sockstat6)

    -> Sockstat(sockets_used=119, inuse=102, orphan=6, tw=14063, alloc=102, mem=221,
                inuse6=3)

Scopes, checked on 6.18 by comparing two netns (KERNEL.md section 0): ``inuse`` and ``tw``
are per netns and ``tw`` counts IPv4 *and* IPv6 TIME_WAIT together (``sockstat_seq_show``
reads ``net->ipv4.tcp_death_row.tw_refcount``, shared by both families); ``orphan``,
``alloc`` and ``mem`` (pages) are global.  ``inuse`` counts IPv4 sockets only; IPv6 ones
are ``TCP6: inuse`` in sockstat6.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs

SOCKSTAT = "net/sockstat"
SOCKSTAT6 = "net/sockstat6"


@dataclass(frozen=True)
class Sockstat:
    """The TCP lines of sockstat and sockstat6; a field the kernel does not print is None."""

    sockets_used: int | None
    inuse: int | None
    orphan: int | None
    tw: int | None
    alloc: int | None
    mem: int | None  # pages, global (tcp_mem compares against it)
    inuse6: int | None  # None when sockstat6 is absent (IPv6 disabled)

    def to_json(self) -> dict[str, int | None]:
        """The ``sockstat`` object of docs/schema.md section 1."""
        return {
            "inuse": self.inuse, "orphan": self.orphan, "tw": self.tw, "alloc": self.alloc,
            "mem": self.mem, "inuse6": self.inuse6, "sockets_used": self.sockets_used,
        }


def parse_keyed_lines(text: str, path: str) -> dict[str, dict[str, int]]:
    """``"TCP: inuse 1 tw 2"`` lines -> ``{"TCP": {"inuse": 1, "tw": 2}}``.

    >>> parse_keyed_lines("sockets: used 40\\nTCP: inuse 2 tw 9\\n", "/proc/net/sockstat")
    {'sockets': {'used': 40}, 'TCP': {'inuse': 2, 'tw': 9}}
    """
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        label, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not label or " " in label or len(words) % 2:
            raise ParseError(path, lineno, line, "expected 'LABEL: key value ...'")
        fields: dict[str, int] = {}
        for key, value in zip(words[::2], words[1::2], strict=True):
            try:
                fields[key] = int(value)
            except ValueError:
                raise ParseError(path, lineno, line, f"{key} is not an integer") from None
        out[label] = fields
    return out


def parse_sockstat(text: str, text6: str | None = None, path: str = "/proc/net/sockstat",
                   path6: str = "/proc/net/sockstat6") -> Sockstat:
    """Decode sockstat (and sockstat6 when given; None means the file does not exist)."""
    v4 = parse_keyed_lines(text, path)
    tcp = v4.get("TCP", {})
    inuse6: int | None = None
    if text6 is not None:
        inuse6 = parse_keyed_lines(text6, path6).get("TCP6", {}).get("inuse")
    return Sockstat(
        sockets_used=v4.get("sockets", {}).get("used"),
        inuse=tcp.get("inuse"),
        orphan=tcp.get("orphan"),
        tw=tcp.get("tw"),
        alloc=tcp.get("alloc"),
        mem=tcp.get("mem"),
        inuse6=inuse6,
    )


def read_sockstat(procfs: Procfs | None = None) -> Sockstat:
    """Read sockstat and sockstat6 of ``procfs``'s namespace (about 10 µs)."""
    procfs = procfs if procfs is not None else Procfs()
    return parse_sockstat(
        procfs.read(SOCKSTAT),
        procfs.read_optional(SOCKSTAT6),
        path=procfs.path(SOCKSTAT),
        path6=procfs.path(SOCKSTAT6),
    )
