"""``/proc/net/softnet_stat``: per-CPU packet processing, summed (netdev_max_backlog drops).

One row per online CPU, 32-bit hex columns (``net/core/net-procfs.c``
``softnet_seq_show``).  The counters are per CPU, not per netns: every namespace shows
the same values (checked on 6.18), so a drop seen in a child netns may be the host's.
The first three columns have always been ``processed``, ``dropped``
(input backlog full: ``netdev_max_backlog``, which also covers loopback, KERNEL.md 1.J)
and ``time_squeeze``.  Later columns were added over time: 9 columns in old kernels (the
last one ``cpu_collision``), then ``received_rps`` (index 9), ``flow_limit_count`` (index
10), the backlog length and the CPU index (13 columns), and on 6.18 the input and process
queue lengths (15 columns).  Only the columns a row has are read; a row of fewer than 3
columns is malformed.

Raw -> decoded (two CPUs)::

    00229361 00000000 00000001 00000000 ...
    002f8216 00000002 00000000 00000000 ...
    -> Softnet(processed=5379447, dropped=2, time_squeeze=1, cpus=2, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpchurn.errors import ParseError
from tcpchurn.kernel.counters import counter_delta
from tcpchurn.kernel.procfs import Procfs

SOFTNET = "net/softnet_stat"
_RECEIVED_RPS = 9
_FLOW_LIMIT = 10


@dataclass(frozen=True)
class Softnet:
    """Columns summed over CPUs; optional ones are None when no row has them."""

    processed: int
    dropped: int
    time_squeeze: int
    received_rps: int | None
    flow_limit_count: int | None
    cpus: int

    def to_json(self) -> dict[str, int | None]:
        """The ``softnet`` object of docs/schema.md section 1."""
        return {"processed": self.processed, "dropped": self.dropped,
                "time_squeeze": self.time_squeeze}


def softnet_delta(earlier: Softnet | None, later: Softnet) -> dict[str, int] | None:
    """``softnet_delta`` of the schema: per-interval increases (None on the first sample).

    The kernel sums u32 per-CPU values, so a column may wrap: :func:`counter_delta`.
    """
    if earlier is None:
        return None
    return {
        "processed": counter_delta(earlier.processed, later.processed),
        "dropped": counter_delta(earlier.dropped, later.dropped),
        "time_squeeze": counter_delta(earlier.time_squeeze, later.time_squeeze),
    }


def parse_softnet(text: str, path: str = "/proc/net/softnet_stat") -> Softnet:
    """Sum the per-CPU rows of softnet_stat."""
    processed = dropped = squeeze = cpus = 0
    rps: int | None = None
    flow: int | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) < 3:
            raise ParseError(path, lineno, line, "fewer than 3 columns")
        try:
            values = [int(w, 16) for w in words]
        except ValueError:
            raise ParseError(path, lineno, line, "columns must be hex") from None
        cpus += 1
        processed += values[0]
        dropped += values[1]
        squeeze += values[2]
        if len(values) > _RECEIVED_RPS:
            rps = (rps or 0) + values[_RECEIVED_RPS]
        if len(values) > _FLOW_LIMIT:
            flow = (flow or 0) + values[_FLOW_LIMIT]
    return Softnet(processed, dropped, squeeze, rps, flow, cpus)


def read_softnet(procfs: Procfs | None = None) -> Softnet | None:
    """Read softnet_stat; None if the kernel has no such file."""
    procfs = procfs if procfs is not None else Procfs()
    text = procfs.read_optional(SOFTNET)
    return parse_softnet(text, procfs.path(SOFTNET)) if text is not None else None
