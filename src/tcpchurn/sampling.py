"""The two sides of a run as the runner sees them: kernel samples and live metrics.

:class:`Side` takes the schema §1 samples of one namespace (ours, a watched one, a
process's) or of a remote ``tcpchurn watch --prometheus`` exporter, each with deltas
against the previous one; :class:`MetricsSink` feeds ``--prometheus``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tcpchurn.environment import read_sysctl_values
from tcpchurn.errors import BadValue, TcpchurnError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.snapshot import KernelSnapshot

#: an interval's sample dumps the TCP states other than TIME_WAIT only while the last
#: sample that dumped them took less than this.  The dump walks the whole socket hash,
#: TIME_WAIT included (inet_diag filters by state per socket): ~40 ms of CPU with
#: 131,072 TIME_WAIT, every second, against DESIGN.md's 1 ms for a per-second sample,
#: and at 80% of the load's ceiling on 2 cores that walk showed as 10-17 ms of schedule
#: lag (bench/ceiling.py, "80% run").  Beyond it, states come with the full dumps
#: (``--detail-every``), which also measure the walk again; the others say
#: ``"source": "sockstat"`` (TIME_WAIT from sockstat, other states null: schema §1).
STATES_BUDGET_S = 0.002


class Side:
    """Kernel samples of one side (client, or the watched server) with their deltas."""

    def __init__(self, procfs: Procfs | None = None, remote: str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.procfs = procfs
        self.remote: Any = None
        self.clock = clock
        self.walk_s = 0.0  # what the last sample that dumped the states took
        self.t0 = time.monotonic()
        self.pid: int | None = None  # whose descriptors to count (a worker, the server)
        self._prev: KernelSnapshot | None = None
        self._remote_ok = False
        self.lost: list[str] = []  # scrapes of the remote side that failed mid-run
        if remote is not None:
            from tcpchurn.report.remote import RemoteWatcher

            self.remote = RemoteWatcher(remote)

    def sample(self, detail: bool) -> dict[str, Any] | None:
        """One §1 sample, with ``*_delta`` against this side's previous one.

        ``None`` only for a remote side whose scrape failed after the first success.
        """
        if self.remote is not None:
            return self._remote_sample()
        states = detail or self.walk_s < STATES_BUDGET_S
        started = self.clock()
        snap = KernelSnapshot.take(self.procfs, pid=self.pid, detail=detail, states=states,
                                   t0=self.t0)
        if states:
            self.walk_s = self.clock() - started
        out = snap.to_json(self._prev)
        self._prev = snap
        return out

    def _remote_sample(self) -> dict[str, Any] | None:
        if not self._remote_ok:
            # The baseline (or every scrape so far) must work: TargetError, exit 3.
            sample: dict[str, Any] = self.remote.sample()
            self._remote_ok = True
            return sample
        try:
            sample = self.remote.sample()
        except TcpchurnError as exc:
            # One lost scrape mid-run must not end the load: the line says null.
            self.lost.append(str(exc))
            return None
        return sample

    def sysctls(self) -> dict[str, Any]:
        """The sysctls of this side (empty for a remote one: it only exports samples)."""
        return read_sysctl_values(self.procfs) if self.procfs is not None else {}

    def close(self) -> None:
        """Leave the watched namespace (ends its reader thread)."""
        if self.procfs is not None:
            self.procfs.close()


class MetricsSink:
    """Live metrics on ``--prometheus PORT`` (tcpchurn.report.prometheus / prom_load)."""

    def __init__(self, port: int, watched: bool) -> None:
        from tcpchurn.report import prom_load, prometheus

        self.registry = prometheus.make_registry()
        self.client = prometheus.KernelMetrics(self.registry, "client")
        self.server = prometheus.KernelMetrics(self.registry, "server") if watched else None
        self.load = prom_load.RunMetrics(self.registry)
        try:
            self.stop: Callable[[], None] = prometheus.start_server(self.registry, port)
        except OSError as exc:
            raise BadValue(
                "--prometheus", port, f"cannot listen on it ({exc.strerror}): pick a free port"
            ) from exc

    def update(self, line: Mapping[str, Any]) -> None:
        """Publish one timeline line (schema §3): load, client and server metrics."""
        self.load.update(line["load"])
        if line["client"] is not None:
            self.client.update(line["client"])
        if self.server is not None and line["server"] is not None:
            self.server.update(line["server"])


def first_worker_pid(pool: object) -> int | None:
    """The pid of worker 0, whose descriptors stand for every worker's on the client.

    The connections' fds live in the worker processes, not in this one; each worker has
    an equal share of the rate, so worker 0's count against its RLIMIT_NOFILE is the
    figure that predicts EMFILE.
    """
    pids = getattr(pool, "pids", None)
    if pids is None:
        # WorkerPool has no public pid list yet (asked for); its Popen objects are it.
        pids = [proc.pid for proc in getattr(pool, "_procs", [])]
    return int(pids[0]) if pids else None
