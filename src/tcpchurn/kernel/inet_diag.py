"""The sock_diag wire format: requests, and sans-IO decoders of inet_diag replies.

The kernel answers ``NETLINK_SOCK_DIAG`` / ``SOCK_DIAG_BY_FAMILY`` requests
(``include/uapi/linux/sock_diag.h``, ``include/uapi/linux/inet_diag.h``) with one
``inet_diag_msg`` per socket.  Everything here takes bytes and returns values; the
socket, the namespace and the dump loop are in :mod:`tcpchurn.kernel.sockdiag`.

Why the standard library and not pyroute2: pyroute2's decoder was measured at ~30 µs per
socket (DESIGN.md), i.e. 3 s for 100,000 TIME_WAIT sockets.  We request no extensions
(``idiag_ext = 0``) and decode only the fixed 72-byte ``inet_diag_msg`` with precompiled
:class:`struct.Struct` objects, or, for a datagram of equal-length messages, with byte
slices and ``struct.iter_unpack`` (C loops): 100,000 TIME_WAIT sockets decode in ~9 ms.

The wire format, per message (``include/uapi/linux/netlink.h``, ``inet_diag.h``)::

    nlmsghdr       len u32, type u16, flags u16, seq u32, pid u32         16 bytes
    inet_diag_msg  family u8, state u8, timer u8, retrans u8               4
                   id: sport be16, dport be16, src be32[4], dst be32[4],  48
                       if u32, cookie u32[2]
                   expires, rqueue, wqueue, uid, inode (u32 each)         20
    attributes     (INET_DIAG_SHUTDOWN, ... for full sockets; skipped)

Each decoder is fed one received datagram at a time and returns True once it saw
NLMSG_DONE; an NLMSG_ERROR (or a negative NLMSG_DONE payload) raises ``OSError``.
"""

from __future__ import annotations

import collections
import errno
import functools
import heapq
import operator
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from tcpchurn.errors import BadValue

# include/net/tcp_states.h.  sock_diag reports a request socket (TCP_NEW_SYN_RECV) with
# idiag_state TCP_SYN_RECV (net/ipv4/inet_diag.c inet_req_diag_fill), exactly as `ss`
# shows it, so NEW_SYN_RECV is always 0 here: it is kept because docs/schema.md lists it.
# TCP_BOUND_INACTIVE (13, Linux 6.7, commit 91051f003948) is dumped only when asked for
# by name: bound-but-unconnected sockets are not in any state table users count.
TCP_STATES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
    13: "BOUND_INACTIVE",
}
STATE_NUMBERS: dict[str, int] = {name: num for num, name in TCP_STATES.items()}
# The keys of every states dict, in this order (docs/schema.md §1).
STATE_NAMES: tuple[str, ...] = tuple(TCP_STATES[n] for n in range(1, 13))

NETLINK_SOCK_DIAG = 4  # include/uapi/linux/netlink.h
SOCK_DIAG_BY_FAMILY = 20  # include/uapi/linux/sock_diag.h
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

AF_INET: int = socket.AF_INET
AF_INET6: int = socket.AF_INET6
FAMILIES: tuple[tuple[int, int], ...] = ((AF_INET, 4), (AF_INET6, 6))
FAMILY_LABEL: dict[int, int] = {AF_INET: 4, AF_INET6: 6}

# nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, 48-byte zero sockid).
_REQUEST = struct.Struct("=IHHIIBBBxI48x")
# nlmsghdr len and type, then family and state of the inet_diag_msg that follows it.
_HEAD = struct.Struct("=IH10xBB")
# The whole fixed part after nlmsghdr, ports kept as raw big-endian bytes.
# Skipped: timer, retrans; if, cookie[2], expires; uid, inode.
_MSG = struct.Struct("=BB2x2s2s16s16s16xII8x")
# family, state, dport, dst: the key of group_destinations.
_DEST = struct.Struct("=BB4x2s16x16s")
_ERR = struct.Struct("=i")
_NLMSG_HDRLEN = 16
_MSG_MIN = _NLMSG_HDRLEN + 72
_V4MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

Buffer: TypeAlias = bytes | bytearray | memoryview
# (family, state, dport as 2 raw bytes, dst as 16 raw bytes) -> sockets
DestinationCounts: TypeAlias = collections.Counter[tuple[int, int, bytes, bytes]]

ALL_STATES_MASK = sum(1 << n for n in range(1, 13))


def states_mask(states: Iterable[str] | None) -> int:
    """The ``idiag_states`` bitmask for state names; ``None`` means the 12 usual states.

    >>> states_mask(["LISTEN"]) == 1 << 10
    True
    """
    if states is None:
        return ALL_STATES_MASK
    mask = 0
    for name in states:
        num = STATE_NUMBERS.get(name.upper().replace("-", "_"))
        if num is None:
            raise BadValue("state", name, f"use one of {', '.join(STATE_NAMES)}")
        mask |= 1 << num
    return mask


def build_request(family: int, mask: int, seq: int = 1) -> bytes:
    """One ``SOCK_DIAG_BY_FAMILY`` dump request for TCP sockets of ``family`` in ``mask``."""
    return _REQUEST.pack(
        _REQUEST.size,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
        family,
        socket.IPPROTO_TCP,
        0,  # idiag_ext: no extensions, we only read the fixed header
        mask,
    )


def _check_control(buf: memoryview, off: int, mtype: int) -> bool:
    """True at NLMSG_DONE; raises ``OSError`` for an NLMSG_ERROR or a failed dump."""
    code = _ERR.unpack_from(buf, off + _NLMSG_HDRLEN)[0] if len(buf) >= off + 20 else 0
    if mtype == NLMSG_ERROR or code < 0:
        # A dump ends with NLMSG_ERROR (or a negative NLMSG_DONE payload) when the kernel
        # refuses it, e.g. ENOENT when inet_diag/tcp_diag is not available.
        err = -code if code < 0 else errno.EIO
        raise OSError(err, f"sock_diag: {os.strerror(err)}")
    return True


@dataclass
class StateCounts:
    """Accumulator of :func:`count_states`: ``counts[(family_label, state)]``."""

    by_family: dict[int, list[int]] = field(default_factory=lambda: {4: [0] * 14, 6: [0] * 14})
    tw_v4mapped: int = 0


def count_states(data: Buffer, acc: StateCounts) -> bool:
    """Count the sockets of one reply chunk into ``acc``; True once NLMSG_DONE was seen.

    This is the hot loop of a full dump (100k TIME_WAIT sockets).  A datagram whose
    messages all have the same length (every TIME_WAIT reply is 96 bytes, 338 of them
    fill a 32 KiB datagram) is counted by :func:`count_uniform` with byte slices;
    anything else by one ``unpack_from`` per message.
    """
    if count_uniform(data, acc):
        return False
    buf = memoryview(data)
    end = len(buf)
    off = 0
    v4 = acc.by_family[4]
    v6 = acc.by_family[6]
    head = _HEAD.unpack_from
    tw = STATE_NUMBERS["TIME_WAIT"]
    af_inet6 = socket.AF_INET6
    # Every message is at least 20 bytes (NLMSG_DONE carries an int), so 18 always fit.
    while off + 18 <= end:
        length, mtype, fam, state = head(buf, off)
        if mtype == SOCK_DIAG_BY_FAMILY:
            if fam == af_inet6:
                v6[state & 15] += 1
                # src of a v4-mapped socket is ::ffff:a.b.c.d (include/net/ipv6.h
                # ipv6_addr_v4mapped); it lives in tcp6 but the peer is IPv4.
                if state == tw and buf[off + 24 : off + 36] == _V4MAPPED_PREFIX:
                    acc.tw_v4mapped += 1
            else:
                v4[state & 15] += 1
        elif mtype in (NLMSG_DONE, NLMSG_ERROR):
            return _check_control(buf, off, mtype)
        if length < _NLMSG_HDRLEN:
            raise OSError(errno.EPROTO, f"sock_diag: bad netlink message length {length}")
        off += (length + 3) & ~3  # NLMSG_ALIGN
    return False


# _BYTE_IS[v]: a bytes.translate() table mapping byte v to 1 and every other byte to 0.
_BYTE_IS: tuple[bytes, ...] = tuple(bytes(int(i == v) for i in range(256)) for v in range(256))


def _where(column: bytes, value: int) -> int:
    """A bit set (one bit per message, as an int) of the bytes of ``column`` == ``value``."""
    return int.from_bytes(column.translate(_BYTE_IS[value]), "little")


def uniform_length(chunk: bytes) -> int:
    """``L`` when ``chunk`` is only socket messages of one length ``L`` and one family,
    else 0 (then it must be decoded message by message, e.g. the datagram that carries
    NLMSG_DONE)."""
    if len(chunk) < 2 * _MSG_MIN:
        return 0
    length = int.from_bytes(chunk[:4], sys.byteorder)
    if length < _MSG_MIN or length % 4 or len(chunk) % length:
        return 0
    n = len(chunk) // length
    # nlmsg_len and nlmsg_type must repeat in every message, and so must the family.
    for k in (*range(6), 16):
        if chunk[k::length] != chunk[k : k + 1] * n:
            return 0
    if int.from_bytes(chunk[4:6], sys.byteorder) != SOCK_DIAG_BY_FAMILY:
        return 0
    return length


def count_uniform(data: Buffer, acc: StateCounts) -> bool:
    """Count a chunk of equal-length socket messages with C-speed byte slices.

    ``chunk[17::L]`` is the ``idiag_state`` of every message of length ``L``; the
    v4-mapped test becomes 12 byte columns of ``idiag_src`` ANDed as bit sets.  Returns
    False, counting nothing, when the chunk is not uniform (:func:`uniform_length`).
    """
    chunk = bytes(data)
    length = uniform_length(chunk)
    if not length:
        return False
    label = FAMILY_LABEL.get(chunk[16])
    if label is None:
        return False
    states = chunk[17::length]
    counts = acc.by_family[label]
    for state in set(states):
        counts[state & 15] += states.count(state)
    if label == 6:
        mapped = _where(states, STATE_NUMBERS["TIME_WAIT"])
        for k, expected in enumerate(_V4MAPPED_PREFIX):  # idiag_src starts at byte 24
            if not mapped:
                break
            mapped &= _where(chunk[24 + k :: length], expected)
        acc.tw_v4mapped += mapped.bit_count()
    return True


def _nlhdr(buf: memoryview, off: int) -> tuple[int, int]:
    length, mtype = struct.unpack_from("=IH", buf, off)
    return length, mtype


@dataclass(frozen=True)
class SockMsg:
    """The fields of one ``inet_diag_msg`` that tcpchurn uses.

    ``src``/``dst`` are 16 raw bytes (IPv4 in the first 4), ports are host order.
    """

    family: int
    state: int
    sport: int
    dport: int
    src: bytes
    dst: bytes
    rqueue: int
    wqueue: int


def iter_messages(data: Buffer) -> Iterator[SockMsg | None]:
    """Decode one reply chunk; yields ``None`` last if it ended with NLMSG_DONE.

    >>> list(iter_messages(struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)))
    [None]
    """
    buf = memoryview(data)
    end = len(buf)
    off = 0
    unpack = _MSG.unpack_from
    while off + _NLMSG_HDRLEN <= end:
        length, mtype = _nlhdr(buf, off)
        if mtype == SOCK_DIAG_BY_FAMILY and off + _MSG_MIN <= end:
            fam, state, sport, dport, src, dst, rq, wq = unpack(buf, off + 16)
            yield SockMsg(
                fam,
                state,
                int.from_bytes(sport, "big"),
                int.from_bytes(dport, "big"),
                src,
                dst,
                rq,
                wq,
            )
        elif mtype in (NLMSG_DONE, NLMSG_ERROR):
            _check_control(buf, off, mtype)
            yield None
            return
        if length < _NLMSG_HDRLEN:
            raise OSError(errno.EPROTO, f"sock_diag: bad netlink message length {length}")
        off += (length + 3) & ~3


def format_address(family: int, raw: bytes, port: int) -> str:
    """``ip:port`` as users write it; v4-mapped IPv6 is shown as the IPv4 it carries.

    >>> format_address(socket.AF_INET6, bytes(10) + b"\\xff\\xff" + bytes([198, 18, 0, 2]), 80)
    '198.18.0.2:80'
    >>> format_address(socket.AF_INET6, bytes(16), 80)
    '[::]:80'
    """
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[:4])}:{port}"
    if raw[:12] == _V4MAPPED_PREFIX:
        return f"{socket.inet_ntop(socket.AF_INET, raw[12:16])}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, raw[:16])}]:{port}"


@dataclass(frozen=True)
class TcpStates:
    """TCP socket counts per state (docs/schema.md §1 ``tcp``).

    ``by_family[4]`` / ``by_family[6]`` and ``total`` map every name of
    :data:`STATE_NAMES` to a count; ``tw_v4mapped`` counts IPv6 TIME_WAIT sockets whose
    addresses are ``::ffff:a.b.c.d`` (IPv4 clients of a dual-stack listener).
    """

    by_family: dict[int, dict[str, int]]
    total: dict[str, int]
    tw_v4mapped: int


def tcp_states_from(acc: StateCounts, mask: int) -> TcpStates:
    """The :class:`TcpStates` of counts made with ``mask`` (states outside it are 0)."""
    names = list(STATE_NAMES)
    if mask & (1 << STATE_NUMBERS["BOUND_INACTIVE"]):
        names.append("BOUND_INACTIVE")
    by_family: dict[int, dict[str, int]] = {}
    for label in (4, 6):
        counts = acc.by_family[label]
        by_family[label] = {
            n: (counts[STATE_NUMBERS[n]] if mask & (1 << STATE_NUMBERS[n]) else 0) for n in names
        }
    total = {n: by_family[4][n] + by_family[6][n] for n in names}
    tw_mapped = acc.tw_v4mapped if mask & (1 << STATE_NUMBERS["TIME_WAIT"]) else 0
    return TcpStates(by_family=by_family, total=total, tw_v4mapped=tw_mapped)


@dataclass(frozen=True)
class Listener:
    """One listening socket: ``queue`` = idiag_rqueue (connections waiting for
    ``accept()``), ``backlog`` = idiag_wqueue (``min(listen() backlog, somaxconn)``),
    as ``ss -ltn`` shows them in Recv-Q / Send-Q (net/ipv4/tcp_diag.c tcp_diag_get_info).
    """

    local: str
    queue: int
    backlog: int
    family: int

    def to_json(self) -> dict[str, object]:
        """The ``listen`` entry of docs/schema.md §1."""
        return {
            "local": self.local,
            "queue": self.queue,
            "backlog": self.backlog,
            "family": self.family,
        }


def decode_listeners(data: Buffer, out: list[Listener]) -> bool:
    """Append the LISTEN sockets of one reply chunk to ``out`` (other states skipped);
    True once NLMSG_DONE was seen."""
    listen = STATE_NUMBERS["LISTEN"]
    for m in iter_messages(data):
        if m is None:
            return True
        if m.state == listen:
            out.append(
                Listener(
                    local=format_address(m.family, m.src, m.sport),
                    queue=m.rqueue,
                    backlog=m.wqueue,
                    family=FAMILY_LABEL.get(m.family, m.family),
                )
            )
    return False


@dataclass(frozen=True)
class Destination:
    """Sockets towards one remote ``ip:port`` (v4-mapped shown as IPv4), by state."""

    remote: str
    sockets: int
    states: dict[str, int]

    def to_json(self) -> dict[str, object]:
        """The ``destinations`` entry of docs/schema.md §1 (without ``port_range``)."""
        return {"remote": self.remote, "sockets": self.sockets, "states": dict(self.states)}


@functools.cache
def _dest_struct(length: int) -> struct.Struct:
    """:data:`_DEST` stretched to a whole message of ``length`` bytes, for iter_unpack."""
    return struct.Struct(f"=16xBB4x2s16x16s{length - 56}x")


def _without_local_ports(chunk: bytes, length: int, skip: frozenset[int]) -> bytes:
    """The messages of a uniform ``chunk`` whose local port (idiag_sport, big-endian at
    offset 20) is not in ``skip``, as vectorised byte work (no object per socket)."""
    import numpy as np  # here: only a full sample, and only with a listener, needs it

    rows = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, length)
    sport = rows[:, 20].astype(np.uint16) << 8 | rows[:, 21]
    # a listener or two: one comparison each; np.isin's set-up took 27 µs a chunk, 10 ms
    # of a full sample with 130,000 server TIME_WAIT (373 chunks)
    keep = np.ones(len(sport), dtype=bool)
    for port in skip:
        keep &= sport != port
    return chunk if keep.all() else rows[keep].tobytes()


def group_destinations(data: Buffer, mask: int, into: DestinationCounts,
                       skip_local_ports: frozenset[int] = frozenset()) -> bool:
    """Count the sockets of one reply chunk whose state is in ``mask`` into
    ``into[(family, state, dport, dst)]``; True once NLMSG_DONE was seen.

    The unpacked tuple itself is the key (no per-socket formatting): on a server every
    TIME_WAIT socket has its own remote port, so there are about as many keys as
    sockets.  A uniform datagram goes through ``struct.iter_unpack`` into
    ``Counter.update``, both in C.  Sockets whose local port is in
    ``skip_local_ports`` (a listener's: its accepted connections) are not counted,
    and are dropped before any key is made.
    """
    chunk = bytes(data)
    length = uniform_length(chunk)
    if length and all((mask >> state) & 1 for state in set(chunk[17::length])):
        if skip_local_ports:
            chunk = _without_local_ports(chunk, length, skip_local_ports)
        into.update(_dest_struct(length).iter_unpack(chunk))
        return False
    unpack = _DEST.unpack_from
    head = _HEAD.unpack_from
    buf = memoryview(chunk)
    end = len(buf)
    off = 0
    get = into.get
    while off + 18 <= end:
        length, mtype, _fam, state = head(buf, off)
        if mtype == SOCK_DIAG_BY_FAMILY and off + _MSG_MIN <= end:
            if (mask >> state) & 1 and (
                not skip_local_ports
                or int.from_bytes(buf[off + 20 : off + 22], "big") not in skip_local_ports
            ):
                key = unpack(buf, off + 16)
                into[key] = get(key, 0) + 1
        elif mtype in (NLMSG_DONE, NLMSG_ERROR):
            return _check_control(buf, off, mtype)
        if length < _NLMSG_HDRLEN:
            raise OSError(errno.EPROTO, f"sock_diag: bad netlink message length {length}")
        off += (length + 3) & ~3
    return False


def rank_destinations(raw: DestinationCounts, top: int = 10) -> list[Destination]:
    """The ``top`` busiest remotes of :func:`group_destinations` counts, formatted.

    IPv4-mapped IPv6 remotes are merged into the IPv4 remote they carry (one ephemeral
    port range is shared by both families: ``inet_hash_connect`` checks one ehash).
    """
    # Pass 1: total per remote (IPv4-mapped folded into IPv4), remembering each key's
    # remote; pass 2: per-state counts only for the `top` remotes.
    totals: dict[tuple[bytes, bytes], int] = {}
    get = totals.get
    folded: list[tuple[tuple[bytes, bytes], int, int]] = []
    for (fam, state, dport, dst), n in raw.items():
        if fam == AF_INET:
            remote = (dst[:4], dport)
        elif dst[:12] == _V4MAPPED_PREFIX:
            remote = (dst[12:16], dport)
        else:
            remote = (dst, dport)
        totals[remote] = get(remote, 0) + n
        folded.append((remote, state, n))
    busiest = heapq.nlargest(max(top, 0), totals.items(), key=operator.itemgetter(1))
    by_state: dict[tuple[bytes, bytes], dict[int, int]] = {r: {} for r, _ in busiest}
    for remote, state, n in folded:
        states = by_state.get(remote)
        if states is not None:
            states[state] = states.get(state, 0) + n
    out = []
    for (addr, dport), total in busiest:
        family = AF_INET if len(addr) == 4 else AF_INET6
        named = {TCP_STATES.get(k, str(k)): v for k, v in sorted(by_state[(addr, dport)].items())}
        remote_text = format_address(family, addr, int.from_bytes(dport, "big"))
        out.append(Destination(remote=remote_text, sockets=total, states=named))
    return out
