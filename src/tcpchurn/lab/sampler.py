"""The lab's own view of the server namespace during a run, four times a second.

``tcpchurn run --watch-netns`` already records the server's tables once per interval;
the lab samples a few of them faster, from its own process, for two reasons:

* to time the stall of ``seed-2009`` to a quarter second (the moment the server's
  conntrack count reaches ``nf_conntrack_max`` and new connections stop arriving), and
* to show the 2009 report's view -- ``wc -l /proc/net/tcp6`` next to ``/proc/net/tcp``
  -- beside what actually filled (conntrack), as the reporter watched it.

``sample_once`` is the thin reader; ``stall_time`` is pure arithmetic over samples.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from tcpchurn.errors import TcpchurnError
from tcpchurn.kernel.counters import parse_counters
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sockstat import parse_sockstat

# In /proc/net/tcp6 an IPv4 peer of a dual-stack listener is ::ffff:a.b.c.d, printed as
# four host-order 32-bit words: 0000000000000000FFFF0000XXXXXXXX (KERNEL.md section 3).
V4MAPPED_PREFIX = "0000000000000000FFFF0000"


@dataclass(frozen=True)
class Sample:
    """One look at the server namespace."""

    t: float  # seconds since the sampler started
    conntrack_count: int | None
    conntrack_max: int | None
    tw: int | None  # sockstat TIME_WAIT, both families
    passive_opens: int | None  # Tcp PassiveOpens (connections the server accepted)
    tcp_lines: int | None  # entries in /proc/net/tcp (seed view only)
    tcp6_lines: int | None
    tcp6_v4mapped: int | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _int_or_none(text: str | None) -> int | None:
    return int(text.strip()) if text is not None and text.strip() else None


def count_tcp_lines(text: str) -> tuple[int, int]:
    """(entries, entries with an IPv4-mapped local address) of a /proc/net/tcp{,6} dump."""
    rows = text.splitlines()[1:]
    mapped = sum(1 for r in rows if r.split()[1].startswith(V4MAPPED_PREFIX))
    return len(rows), mapped


def sample_once(proc: Procfs, t: float, seed_view: bool) -> Sample:
    """Read the server namespace once."""
    sockstat = proc.read_optional("net/sockstat")
    snmp = proc.read_optional("net/snmp")
    tcp = tcp6 = mapped = None
    if seed_view:
        tcp, _ = count_tcp_lines(proc.read("net/tcp"))
        tcp6, mapped = count_tcp_lines(proc.read("net/tcp6"))
    return Sample(
        t=round(t, 3),
        conntrack_count=_int_or_none(proc.read_optional("sys/net/netfilter/nf_conntrack_count")),
        conntrack_max=_int_or_none(proc.read_optional("sys/net/netfilter/nf_conntrack_max")),
        tw=parse_sockstat(sockstat).tw if sockstat else None,
        passive_opens=parse_counters(snmp, "/proc/net/snmp").get("Tcp", {}).get("PassiveOpens")
        if snmp
        else None,
        tcp_lines=tcp,
        tcp6_lines=tcp6,
        tcp6_v4mapped=mapped,
    )


class Sampler:
    """A daemon thread that samples ``netns`` every ``period`` seconds until stopped."""

    def __init__(self, netns: str, period: float = 0.25, seed_view: bool = False) -> None:
        self.netns = netns
        self.period = period
        self.seed_view = seed_view
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="lab-sampler", daemon=True)

    def start(self) -> None:
        """Begin sampling."""
        self._thread.start()

    def stop(self) -> list[Sample]:
        """Stop and return every sample taken."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        return self.samples

    def _main(self) -> None:
        start = time.monotonic()
        last_seed = -1.0
        with Procfs(netns=self.netns) as proc:
            while not self._stop.is_set():
                try:
                    t = time.monotonic() - start
                    # The 2009 view walks the whole (shared) ehash: ~15-30 ms at 16k
                    # sockets (KERNEL.md section 4), so once a second, not four times; CPU
                    # taken here is CPU the load generator on the same two cores lacks.
                    seed = self.seed_view and t - last_seed >= 1.0
                    if seed:
                        last_seed = t
                    self.samples.append(sample_once(proc, t, seed))
                except (OSError, ValueError, TcpchurnError):
                    pass  # the namespace is going away at the end of the run
                self._stop.wait(self.period)


def load_start(samples: list[Sample]) -> float | None:
    """The time of the first sample after which the server accepted connections."""
    base = next((s.passive_opens for s in samples if s.passive_opens is not None), None)
    if base is None:
        return None
    for prev, cur in itertools.pairwise(samples):
        if cur.passive_opens is not None and cur.passive_opens > base:
            return prev.t
    return None


def stall_time(samples: list[Sample]) -> float | None:
    """Seconds from the first accepted connection until conntrack reached its max.

    ``None`` when the table never filled.  Resolution: the sampling period.  "Reached"
    means 99 %: once the table is >= 95 % full the GC worker evicts assured TIME_WAIT
    entries (``nf_conntrack_core.c`` ``gc_worker_can_early_drop``), so a full table can
    sit a few entries under ``max`` between samples.
    """
    start = load_start(samples)
    if start is None:
        return None
    for s in samples:
        if (
            s.t >= start
            and s.conntrack_count is not None
            and s.conntrack_max is not None
            and s.conntrack_count * 100 >= s.conntrack_max * 99
        ):
            return round(s.t - start, 3)
    return None
