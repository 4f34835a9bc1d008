"""TCP sockets by state, listener queues and per-destination port use, from sock_diag.

The kernel filters by state *in the kernel* through the ``idiag_states`` bitmask of
``inet_diag_req_v2``: a LISTEN-only dump walks only the listening hash and costs
~0.03 ms even with 100k TIME_WAIT sockets elsewhere (KERNEL.md §4, bench/watch_cost.py).
This is how ``ss`` reads sockets too (``misc/ss.c`` ``inet_show_netlink``).

This module is the I/O: one ``NETLINK_SOCK_DIAG`` socket per namespace, the dump loop,
and the public functions other modules call.  The wire format and the decoders are in
:mod:`tcpchurn.kernel.inet_diag` (sans-IO, re-exported here).  A
:class:`~tcpchurn.kernel.procfs.Procfs` fixture directory is read from
``netlink/inet_diag_v4.bin`` / ``inet_diag_v6.bin`` (captured replies, see
``tests/fixtures/netlink/``) and filtered by state by the decoders.
"""

from __future__ import annotations

import collections
import errno
import socket
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TypeAlias

from tcpchurn.kernel.inet_diag import (
    ALL_STATES_MASK,
    FAMILIES,
    FAMILY_LABEL,
    NETLINK_SOCK_DIAG,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    STATE_NAMES,
    STATE_NUMBERS,
    TCP_STATES,
    Buffer,
    Destination,
    DestinationCounts,
    Listener,
    StateCounts,
    TcpStates,
    build_request,
    count_states,
    count_uniform,
    decode_listeners,
    format_address,
    group_destinations,
    rank_destinations,
    states_mask,
    tcp_states_from,
)
from tcpchurn.kernel.procfs import Procfs

__all__ = [
    "ALL_STATES_MASK",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "SOCK_DIAG_BY_FAMILY",
    "STATE_NAMES",
    "STATE_NUMBERS",
    "TCP_STATES",
    "Destination",
    "DiagSocket",
    "Listener",
    "StateCounts",
    "TcpStates",
    "build_request",
    "count_states",
    "count_uniform",
    "decode_listeners",
    "destinations",
    "format_address",
    "group_destinations",
    "listener_ports",
    "listeners",
    "rank_destinations",
    "raw_dump",
    "run_dump",
    "states_and_destinations",
    "states_mask",
    "tcp_states",
]

# The reply to a dump comes in skbs of at most ~32 KiB (net/netlink/af_netlink.c
# netlink_dump caps max_recvmsg_len; measured: 32,448 bytes per datagram on 6.18);
# a 1 MiB buffer never truncates one.
RECV_BUFFER = 1 << 20
DUMP_TIMEOUT = 10.0  # seconds without a datagram before a dump is abandoned

# A decoder fed one received datagram at a time; returns True once it saw NLMSG_DONE.
Consumer: TypeAlias = Callable[[Buffer], bool]


class DiagSocket:
    """One ``NETLINK_SOCK_DIAG`` socket, created inside the namespace of a Procfs.

    A netlink socket belongs to the namespace it was created in for its whole life
    (``net/netlink/af_netlink.c`` ``__netlink_create``), so it is created through
    :meth:`Procfs.call` and may then be used from any thread (one dump at a time).
    """

    def __init__(self, procfs: Procfs) -> None:
        def _open() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)

        self.sock = procfs.call(_open)
        # A dump always ends with NLMSG_DONE; the timeout only turns a kernel that stops
        # answering into an OSError instead of a watch that hangs forever.
        self.sock.settimeout(DUMP_TIMEOUT)
        self.buf = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buf)
        self.lock = threading.Lock()
        self.seq = 0

    def dump(self, family: int, mask: int, consume: Consumer) -> None:
        """Send one dump request and feed each received datagram to ``consume`` until it
        returns True (it saw NLMSG_DONE).  The caller holds :attr:`lock`."""
        self.seq += 1
        self.sock.sendto(build_request(family, mask, self.seq), (0, 0))
        while True:
            n = self.sock.recv_into(self.buf)
            if n == 0:
                raise OSError(errno.EPROTO, "sock_diag: dump ended without NLMSG_DONE")
            if consume(self.view[:n]):
                return

    def close(self) -> None:
        """Close the netlink socket."""
        self.sock.close()


_sockets: weakref.WeakKeyDictionary[Procfs, DiagSocket] = weakref.WeakKeyDictionary()
_sockets_lock = threading.Lock()


def _diag_socket(procfs: Procfs) -> DiagSocket:
    """The cached sock_diag socket of ``procfs`` (creating one costs a namespace hop)."""
    with _sockets_lock:
        ds = _sockets.get(procfs)
        if ds is None:
            ds = DiagSocket(procfs)
            _sockets[procfs] = ds
        return ds


def _forget(procfs: Procfs, ds: DiagSocket) -> None:
    with _sockets_lock:
        if _sockets.get(procfs) is ds:
            del _sockets[procfs]
    ds.close()


def run_dump(procfs: Procfs, family: int, mask: int, consume: Consumer) -> None:
    """One state-filtered dump of ``family`` in ``procfs``'s namespace, fed to ``consume``.

    For a fixture Procfs the captured reply (``netlink/inet_diag_v4.bin``) is fed whole
    and unfiltered; the decoders filter by state again, so both paths agree.
    """
    if not procfs.is_live:
        label = FAMILY_LABEL[family]
        with open(procfs.path(f"netlink/inet_diag_v{label}.bin"), "rb") as f:
            consume(f.read())
        return
    if mask == 0:
        # Nothing asked for: idiag_states 0 matches no socket (checked on 6.18), so skip
        # the round trip and the namespace hop.
        return
    ds = _diag_socket(procfs)
    with ds.lock:
        try:
            ds.dump(family, mask, consume)
        except BaseException:
            # Unread parts of an interrupted dump would be read as the next reply:
            # throw the socket away instead of trying to resynchronise.
            _forget(procfs, ds)
            raise


def raw_dump(procfs: Procfs, family: int, mask: int = ALL_STATES_MASK) -> bytes:
    """The reply to one dump as bytes, up to and including NLMSG_DONE (for fixtures)."""
    parts: list[bytes] = []

    def keep(chunk: Buffer) -> bool:
        parts.append(bytes(chunk))
        return count_states(chunk, StateCounts())

    run_dump(procfs, family, mask, keep)
    return b"".join(parts)


def tcp_states(procfs: Procfs, states: Iterable[str] | None = None) -> TcpStates:
    """Count TCP sockets by state and family in ``procfs``'s namespace.

    ``states`` restricts the dump in the kernel (``["TIME_WAIT"]``: only TIME_WAIT is
    walked and counted; the other keys are 0).  Raises ``OSError`` if the kernel refuses
    the dump and ``FileNotFoundError`` for a fixture without a captured reply.
    """
    mask = states_mask(states)
    acc = StateCounts()
    for family, _label in FAMILIES:
        run_dump(procfs, family, mask, lambda chunk: count_states(chunk, acc))
    return tcp_states_from(acc, mask)


def listeners(procfs: Procfs) -> list[Listener]:
    """Every TCP listener of ``procfs``'s namespace with its accept queue and backlog.

    A LISTEN-only dump: the kernel walks only the listening hash (cheap at any load).
    """
    mask = 1 << STATE_NUMBERS["LISTEN"]
    out: list[Listener] = []
    for family, _label in FAMILIES:
        run_dump(procfs, family, mask, lambda chunk: decode_listeners(chunk, out))
    return out


def destinations(
    procfs: Procfs, top: int = 10, states: Iterable[str] | None = None,
    skip_local_ports: frozenset[int] = frozenset(),
) -> list[Destination]:
    """The ``top`` remote ``ip:port`` with the most sockets, busiest first.

    Each socket to one destination holds one local port out of ``ip_local_port_range``
    (per source ip, destination ip and port; KERNEL.md §B), so ``sockets`` compared with
    the range size is the ephemeral port use.  LISTEN is never counted (no remote), nor
    any socket whose local port is in ``skip_local_ports`` (see listener_ports).
    """
    mask = states_mask(states) & ~(1 << STATE_NUMBERS["LISTEN"])
    raw: DestinationCounts = collections.Counter()
    for family, _label in FAMILIES:
        run_dump(procfs, family, mask,
                 lambda chunk: group_destinations(chunk, mask, raw, skip_local_ports))
    return rank_destinations(raw, top)


def listener_ports(listen: Iterable[Listener]) -> frozenset[int]:
    """The local ports of ``listen``: a listener's accepted connections share its port,
    hold no port of their own, and each has a client's port as its "remote".  Left in
    :func:`destinations`, a loopback test's server TIME_WAIT made one key per socket:
    20 ms a sample with 14,000 of them (Counter of tuples), 30 ms of the sampler's CPU
    taken from the load every ``--detail-every`` intervals.  No client socket can have
    one of these ports: connect() skips every port a listener has bound (the bind hash,
    net/ipv4/inet_hashtables.c ``__inet_hash_connect``).

    >>> sorted(listener_ports([Listener("127.0.0.1:80", 0, 511, 4),
    ...                        Listener("[::]:8080", 0, 511, 6)]))
    [80, 8080]
    """
    return frozenset(int(x.local.rsplit(":", 1)[1]) for x in listen)


def states_and_destinations(
    procfs: Procfs, top: int = 10, states: Iterable[str] | None = None,
    skip_local_ports: frozenset[int] = frozenset(),
) -> tuple[TcpStates, list[Destination]]:
    """:func:`tcp_states` and :func:`destinations` from ONE dump per family.

    Both walk the whole shared ehash (~20 ms per 100k sockets on 6.18); a full sample
    that wants both pays for one walk instead of two.
    """
    mask = states_mask(states)
    dest_mask = mask & ~(1 << STATE_NUMBERS["LISTEN"])
    acc = StateCounts()
    raw: DestinationCounts = collections.Counter()

    def both(chunk: Buffer) -> bool:
        group_destinations(chunk, dest_mask, raw, skip_local_ports)
        return count_states(chunk, acc)

    for family, _label in FAMILIES:
        run_dump(procfs, family, mask, both)
    return tcp_states_from(acc, mask), rank_destinations(raw, top)
