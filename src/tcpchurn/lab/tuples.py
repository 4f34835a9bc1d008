"""What filled the conntrack table: distinct 4-tuples, source ports and their parity.

KERNEL.md section 6 explains why one client address could not fill a 16,384-entry table
at 1,000 conn/s: a reused 4-tuple reuses its conntrack entry (a SYN on an entry in
TIME_WAIT re-opens it, ``nf_conntrack_proto_tcp.c`` ``tcp_conntracks`` sIW -> sSS), and
``connect()`` picks even ports first (``net/ipv4/inet_hashtables.c``
``__inet_hash_connect``, commit 1580ab63fc9a "tcp/dccp: better use of ephemeral ports in
connect()"), starting each search where the previous one for the same destination ended
plus a random 0-14 ports (``i = max(i, get_random_u32_below(8) * step);
table_perturb[index] += i + step``, from W. Tarreau's 2022 series "tcp: add small random
increments to the source port").  One lap over the 14,116 even ports therefore takes
about 28,232 / 9 = 3,137 connections; after that a connect lands on ports used before
and, the client side being CLOSED when the server closed first, re-uses their 4-tuples.
Distinct 4-tuples then grow roughly like 14,116 x (1 - e^(-n/14,116)) and never reach
16,384.  The lab checks that instead of assuming it: it reads the server's
``/proc/net/nf_conntrack`` at the end of a run (entries live 120 s, longer than any lab
run, so the table holds every 4-tuple the run used) and counts.

Parser input, one line per entry (``net/netfilter/nf_conntrack_standalone.c``
``ct_seq_show``)::

    ipv4     2 tcp      6 117 TIME_WAIT src=198.18.0.1 dst=198.18.0.2 sport=40002 \
dport=80 src=198.18.0.2 dst=198.18.0.1 sport=80 dport=40002 [ASSURED] mark=0 use=1

-> ``("198.18.0.1", 40002, "198.18.0.2", 80)``: the original direction's tuple.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from tcpchurn.errors import ParseError

PATH = "/proc/net/nf_conntrack"

FourTuple = tuple[str, int, str, int]


def parse_nf_conntrack(text: str) -> list[tuple[str, FourTuple]]:
    """``(tcp state, original 4-tuple)`` of every TCP entry; other protocols skipped."""
    out: list[tuple[str, FourTuple]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) < 6 or fields[2] != "tcp":
            continue
        kv: dict[str, str] = {}
        for f in fields[6:]:
            key, sep, value = f.partition("=")
            if sep and key not in kv:  # the first src/dst/sport/dport: original direction
                kv[key] = value
        try:
            tup = (kv["src"], int(kv["sport"]), kv["dst"], int(kv["dport"]))
        except (KeyError, ValueError) as exc:
            raise ParseError(PATH, lineno, line, "no src/sport/dst/dport") from exc
        out.append((fields[5], tup))
    return out


@dataclass(frozen=True)
class TupleStats:
    """How many entries, how many distinct 4-tuples, and which source ports."""

    entries: int
    distinct_tuples: int
    sources: int
    ports_per_source: dict[str, int]
    even_ports: int
    odd_ports: int
    port_min: int | None
    port_max: int | None
    states: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def tuple_stats(entries: list[tuple[str, FourTuple]], dport: int = 80) -> TupleStats:
    """Count the entries whose destination port is ``dport`` (the lab's server)."""
    mine = [(state, t) for state, t in entries if t[3] == dport]
    tuples = {t for _, t in mine}
    per_source: Counter[str] = Counter()
    ports: set[tuple[str, int]] = set()
    for src, sport, _, _ in tuples:
        if (src, sport) not in ports:
            ports.add((src, sport))
            per_source[src] += 1
    even = sum(1 for _, p in ports if p % 2 == 0)
    only_ports = [p for _, p in ports]
    return TupleStats(
        entries=len(mine),
        distinct_tuples=len(tuples),
        sources=len(per_source),
        ports_per_source=dict(per_source),
        even_ports=even,
        odd_ports=len(ports) - even,
        port_min=min(only_ports) if only_ports else None,
        port_max=max(only_ports) if only_ports else None,
        states=dict(Counter(state for state, _ in mine)),
    )
