"""``/proc/net/tcp`` and ``/proc/net/tcp6``: the 2009 report's view, and a fallback.

The seed watched ``cat /proc/net/tcp6 | wc -l`` climb to ~17,000 while ``/proc/net/tcp``
stayed at 20 (KERNEL.md section 3): a dual-stack ``[::]:80`` listener turns IPv4 clients
into AF_INET6 sockets with IPv4-mapped addresses, listed only in ``tcp6``.  This module
counts lines by state and those IPv4-mapped entries.  It walks the whole shared ehash
(83 ms with 118k TIME_WAIT, KERNEL.md section 4), so it runs only when asked; the
per-second sample counts TIME_WAIT with sockstat and the rest with sock_diag.

A line, raw -> decoded (addresses are hex in host byte order, ports big-endian)::

    "   0: 0100007F:1F90 00000000:0000 0A ..."      -> 127.0.0.1:8080, LISTEN
    "  12: 0000000000000000FFFF00000100007F:0050 ... 06 ..."
                                                     -> [::ffff:127.0.0.1]:80, TIME_WAIT
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs

TCP = "net/tcp"
TCP6 = "net/tcp6"

#: The ``st`` column: ``include/net/tcp_states.h`` (as psutil's ``TCP_STATUSES``).
TCP_STATES: dict[str, str] = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "NEW_SYN_RECV",
}

#: ``::ffff:0:0/96`` as ``/proc/net/tcp6`` prints it: four host-order 32-bit words.
V4MAPPED_PREFIX = "0000000000000000FFFF0000"


@dataclass(frozen=True)
class TcpTable:
    """One of the two files, counted."""

    lines: int  # socket lines, header excluded (the seed's `wc -l` minus one)
    states: dict[str, int] = field(default_factory=dict)
    v4mapped: int = 0  # lines whose local address is ::ffff:a.b.c.d (tcp6 only)


@dataclass(frozen=True)
class ProcNetTcp:
    """Both files; ``tcp6`` is None when IPv6 is disabled."""

    tcp: TcpTable
    tcp6: TcpTable | None

    def to_json(self) -> dict[str, int | None]:
        """The ``proc_net_tcp`` object of docs/schema.md section 1."""
        return {
            "tcp_lines": self.tcp.lines,
            "tcp6_lines": self.tcp6.lines if self.tcp6 is not None else None,
            "tcp6_v4mapped": self.tcp6.v4mapped if self.tcp6 is not None else None,
        }


def decode_address(field_: str) -> tuple[str, int]:
    """``"0100007F:1F90"`` -> ``("127.0.0.1", 8080)``; IPv6 and IPv4-mapped too.

    The kernel prints each 32-bit word of the address in host byte order
    (``net/ipv4/tcp_ipv4.c`` ``get_tcp4_sock``: ``%08X`` of ``__be32``).

    >>> decode_address("0000000000000000FFFF00000100007F:0050")
    ('::ffff:127.0.0.1', 80)
    """
    addr, _, port = field_.partition(":")
    raw = bytes.fromhex(addr)
    words = struct.unpack(f"={len(raw) // 4}I", raw)  # the kernel's (native) byte order
    packed = struct.pack(f">{len(words)}I", *words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


def parse_tcp_table(text: str, path: str = "/proc/net/tcp") -> TcpTable:
    """Count the socket lines of ``/proc/net/tcp{,6}`` by state and IPv4-mapped address."""
    states = dict.fromkeys(TCP_STATES.values(), 0)
    lines = v4mapped = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split(maxsplit=4)
        if lineno == 1 and words[:1] == ["sl"]:
            continue
        if not words:
            continue
        if len(words) < 4 or not words[0].endswith(":") or ":" not in words[1]:
            raise ParseError(path, lineno, line, "expected 'sl: local remote st ...'")
        name = TCP_STATES.get(words[3])
        if name is None:
            raise ParseError(path, lineno, line, f"unknown state {words[3]!r}")
        states[name] += 1
        lines += 1
        if words[1].startswith(V4MAPPED_PREFIX):
            v4mapped += 1
    return TcpTable(lines, states, v4mapped)


def read_proc_net_tcp(procfs: Procfs | None = None) -> ProcNetTcp:
    """Read and count both files (expensive with many sockets: only on request)."""
    procfs = procfs if procfs is not None else Procfs()
    tcp6 = procfs.read_optional(TCP6)
    return ProcNetTcp(
        tcp=parse_tcp_table(procfs.read(TCP), procfs.path(TCP)),
        tcp6=parse_tcp_table(tcp6, procfs.path(TCP6)) if tcp6 is not None else None,
    )
