"""One run: the load, the kernel samples beside it, the files, and the verdict.

:func:`run` is the library entry point behind ``tcpchurn run`` (the CLI only parses
options into a :class:`RunConfig` and renders).  Per interval it pairs the merged load
interval of the worker pool (schema §2) with a kernel sample of the client side and, when
asked, of the server side (§1) into one timeline line (§3), writes and flushes it,
updates Prometheus and calls ``on_interval``.  At the end it writes summary.json (§4):
also after Ctrl-C or SIGTERM, with ``interrupted: true``.

Why the kernel is sampled here and not in the workers: the tables (sockstat, conntrack,
TIME_WAIT) are per network namespace, not per process, so one sample per interval in the
parent covers every worker; the workers only measure connections.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tcpchurn.environment import take_environment
from tcpchurn.errors import BadValue
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.load.config import LoadConfig, parse_target
from tcpchurn.load.engine import raise_nofile
from tcpchurn.report.files import (
    SUMMARY_NAME,
    TIMELINE_NAME,
    TimelineWriter,
    read_timeline,
    write_summary,
)
from tcpchurn.run_summary import apply_verdict, build_summary, diagnose, write_html
from tcpchurn.sampling import MetricsSink, Side, first_worker_pid

if TYPE_CHECKING:
    from tcpchurn.server import ServerConfig

TimelineLine = dict[str, Any]
OnInterval = Callable[[TimelineLine], None]
OnStart = Callable[[dict[str, Any], dict[str, Any]], None]

# Full per-state socket dumps walk the whole ehash: ~40-90 ms with 100k+ TIME_WAIT
# sockets (KERNEL.md §4), so they run only every DETAIL_EVERY intervals; sockstat,
# counters, conntrack and LISTEN queues are read every interval (< 1 ms).
DETAIL_EVERY = 5


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; frozen and picklable.

    ``builtin_server`` set means: start :mod:`tcpchurn.server` on 127.0.0.1 with an
    ephemeral port and aim ``load`` at it (its target is replaced once the port is known).
    """

    load: LoadConfig
    builtin_server: ServerConfig | None = None
    watch_netns: str | None = None
    watch_pid: int | None = None
    watch_remote: str | None = None
    out_dir: Path = Path("tcpchurn-out")
    prometheus_port: int | None = None
    html: bool = False
    quiet: bool = False
    detail_every: int = DETAIL_EVERY
    #: once the workers run, this process's nice (0: unchanged; the CLI: PARENT_NICE), so
    #: the sampler yields to the load under contention (yield_to_load); a library caller
    #: keeps its own priority
    parent_nice: int = 0

    @property
    def target_label(self) -> str:
        """How the target is shown before the run (the built-in server has no port yet)."""
        if self.builtin_server is not None:
            return "built-in server on 127.0.0.1"
        return str(self.load.target.url)

    def to_json(self) -> dict[str, Any]:
        """The config as given, for ``config`` in summary.json."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self.load):
            out[f.name] = _jsonable(getattr(self.load, f.name))
        for f in dataclasses.fields(self):
            if f.name != "load":
                out[f.name] = _jsonable(getattr(self, f.name))
        return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    url = getattr(value, "url", None)
    if isinstance(url, str):
        return url
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


@dataclass
class RunResult:
    """What :func:`run` hands back: the summary (as written) and where the files are."""

    out_dir: Path
    summary: dict[str, Any]
    intervals: int
    interrupted: bool
    warnings: list[str] = field(default_factory=list)
    html: Path | None = None

    @property
    def target_never_worked(self) -> bool:
        """Every connection failed: the target is unreachable, refuses or misbehaves."""
        conns = self.summary["connections"]
        return bool(conns["ok"] == 0 and conns["failed"] > 0)

    @property
    def exit_code(self) -> int:
        """The exit code of cli/__init__.py: 130, 3, 1 or 0."""
        if self.interrupted:
            return 130
        if self.target_never_worked:
            return 3
        conns = self.summary["connections"]
        # Warnings (the dual-stack tcp6 note, a table near full) are advice, not a limit
        # hit: only a finding that stopped or degraded the run, a failed connection or a
        # saturated generator makes the exit code 1.
        limited = any(f.get("severity") != "warning" for f in self.summary["findings"])
        if limited or conns["failed"] or self.summary["generator_saturated"]:
            return 1
        return 0


class _StopFlag:
    """Set by SIGINT/SIGTERM; the run stops the load at the next interval boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.on_set: Callable[[], None] | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop waiting for the graceful end
        self.signum = signum
        if self.on_set is not None:
            self.on_set()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _signals_stop(flag: _StopFlag) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``flag`` for the duration of the load (main thread)."""
    if not _main_thread():
        yield
        return
    old = {s: signal.signal(s, flag.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def fd_estimate(cfg: RunConfig) -> int:
    """Descriptors one worker may hold at once: its rate x the longest lifetime.

    A connection holds its fd from ``socket()`` until ``close()``: at worst the full
    ``--timeout`` (TIME_WAIT sockets hold none: KERNEL.md §I).
    """
    workers = max(int(cfg.load.workers or os.cpu_count() or 1), 1)
    per_worker = float(cfg.load.rate) / workers
    if cfg.load.max_inflight:
        return min(int(per_worker * cfg.load.timeout) + 1, int(cfg.load.max_inflight))
    return int(per_worker * float(cfg.load.timeout)) + 1


def preflight_warnings(cfg: RunConfig) -> list[str]:
    """Warnings worth showing before the run starts (rate x lifetime vs RLIMIT_NOFILE)."""
    warnings = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = hard if hard != resource.RLIM_INFINITY else soft
    need = fd_estimate(cfg)
    if usable != resource.RLIM_INFINITY and need > usable:
        warnings.append(
            f"each worker may need up to {need:,} file descriptors (rate {cfg.load.rate:g}/s "
            f"/ workers x --timeout {cfg.load.timeout:g} s) but RLIMIT_NOFILE is {usable:,}: "
            "expect EMFILE; raise it with `ulimit -n` or `prlimit`, or lower --timeout"
        )
    return warnings


def _open_server_side(cfg: RunConfig) -> Side | None:
    if cfg.watch_netns is not None or cfg.watch_pid is not None:
        return Side(Procfs(netns=cfg.watch_netns, pid=cfg.watch_pid))
    if cfg.watch_remote is not None:
        return Side(remote=cfg.watch_remote)
    return None


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to overwrite an earlier run (checked before anything starts)."""
    for name in (TIMELINE_NAME, SUMMARY_NAME):
        if (out_dir / name).exists():
            raise BadValue("--out", str(out_dir),
                           f"it already holds a run ({name}): give a new directory")


def _open_timeline(out_dir: Path) -> TimelineWriter:
    try:
        return TimelineWriter(out_dir)
    except OSError as exc:
        raise BadValue("--out", str(out_dir), f"cannot write there ({exc.strerror})") from exc


@dataclass
class _Prepared:
    """What exists once every check has passed and before the first connection."""

    load: LoadConfig
    client: Side
    server: Side | None
    environment: dict[str, Any]
    prom: MetricsSink | None


def _prepare(cfg: RunConfig, stack: ExitStack, on_start: OnStart | None) -> _Prepared:
    """Open both sides, start the built-in server, take the baselines.

    Everything that can fail on the user's input or on the target fails here, before
    any file is created (NamespaceNotFound, BadValue, TargetError).
    """
    _check_out_dir(cfg.out_dir)
    client = Side(Procfs())
    stack.callback(client.close)
    server = _open_server_side(cfg)
    if server is not None:
        stack.callback(server.close)
    load = cfg.load
    if cfg.builtin_server is not None:
        from tcpchurn.server import spawn

        # Ctrl-C in a terminal goes to the whole foreground process group, and the server
        # installs its own SIGINT handler, so ignoring SIGINT would not survive its start.
        # A *blocked* signal mask is inherited across fork and execve (signal(7)) and
        # asyncio never unblocks it: the server then sees no SIGINT, outlives the load's
        # graceful stop, and is ended by RunningServer.stop() with SIGTERM.
        blocked = _main_thread()
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            srv = stack.enter_context(spawn(cfg.builtin_server))
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        load = dataclasses.replace(load, target=parse_target(f"http://127.0.0.1:{srv.port}/"))
    target = load.target
    environment = take_environment(
        client.procfs or Procfs(),
        source_ips=list(load.source_ips),
        target=(target.host, target.port, target.af),
    )
    # First samples: every side must answer before anything starts (a remote exporter
    # that does not fails the run here: TargetError, exit 3).
    client.sample(detail=False)
    if server is not None:
        server.sample(detail=False)
    prom: MetricsSink | None = None
    if cfg.prometheus_port is not None:
        prom = MetricsSink(cfg.prometheus_port, server is not None)
        stack.callback(prom.stop)
    # schema §4: the watched server's own limits (a new netns starts from the kernel
    # defaults, not the host's: KERNEL.md §2); {} without a local server side.
    environment["server_sysctls"] = server.sysctls() if server is not None else {}
    if on_start is not None:
        on_start(environment, environment["server_sysctls"])
    return _Prepared(load, client, server, environment, prom)



#: the parent's nice once the workers run, as ``tcpchurn run`` sets it (yield_to_load)
PARENT_NICE = 10


def yield_to_load(nice: int) -> None:
    """Lower every thread of this process (the parent) to at least ``nice``.

    Called once the workers are spawned: they keep theirs.  The parent's kernel samples
    walk the socket tables: with 131,072 TIME_WAIT sockets a per-second sample costs
    ~40 ms of CPU and a detail one (every ``--detail-every``) ~170 ms, most of it in the
    kernel.  At nice 0 that burst took the CPU from nginx in the middle of a run at
    62,000/s on 2 cores: its accept queue overflowed (ListenOverflows 5,921 in the next
    second), the dropped SYNs came back after 1 s, and the run collapsed (an A/B of 3
    pairs: 3 of 3 at nice 0, 0 of 3 at nice 10).  At a lower weight the sampler takes
    what the load leaves and yields under contention.
    Raising one's nice needs no privilege (setpriority(2)); threads made later inherit it.
    """
    for tid in os.listdir("/proc/self/task"):
        try:
            # never raise a priority (a user's `nice -n 15 tcpchurn run` stays at 15)
            current = os.getpriority(os.PRIO_PROCESS, int(tid))
            os.setpriority(os.PRIO_PROCESS, int(tid), max(current, nice))
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile; a sandbox that forbids it

def run(
    cfg: RunConfig,
    on_interval: OnInterval | None = None,
    on_start: OnStart | None = None,
) -> RunResult:
    """Run the load described by ``cfg``; write timeline.jsonl and summary.json.

    ``on_start(environment, server_sysctls)`` is called once before the first interval and
    ``on_interval(line)`` after each timeline line is written (the dashboard).  SIGINT and
    SIGTERM stop the load at the next interval boundary (a second one stops at once) and
    both files are still written, with ``interrupted: true``; so they are when the run
    fails half-way (the error is re-raised after).  Usage and target errors found before
    the load starts raise before any file is created.
    """
    from tcpchurn.load.pump import engine_kind
    from tcpchurn.load.stats import RunTotals
    from tcpchurn.load.workers import WorkerPool

    warnings = preflight_warnings(cfg)
    raise_nofile()
    flag = _StopFlag()
    failure: Exception | None = None
    totals = RunTotals()
    intervals = 0
    with ExitStack() as stack:
        prep = _prepare(cfg, stack, on_start)
        load, client, server = prep.load, prep.client, prep.server
        # before any worker starts: a TCPCHURN_ENGINE that cannot be had is a usage error
        prep.environment["engine"] = engine_kind(load)
        writer = stack.enter_context(_open_timeline(cfg.out_dir))
        pool = WorkerPool(load)
        stack.callback(pool.close)
        started = time.time()
        with _signals_stop(flag):
            flag.on_set = pool.stop
            try:

                def rebaseline() -> None:
                    # Re-baseline once the workers are ready and before the start time is
                    # set, so the first interval's deltas are not stretched by start-up
                    # and the samples' walk of the socket tables is not in the load's way.
                    client.pid = first_worker_pid(pool)
                    client.sample(detail=False)
                    if server is not None:
                        server.sample(detail=False)

                pool.start(on_ready=rebaseline)
                if cfg.parent_nice:
                    yield_to_load(cfg.parent_nice)
                prep.environment["worker_slice_us"] = [
                    ns / 1000 if ns is not None else None for ns in pool.slices_ns]
                prep.environment["worker_cpus"] = pool.cpus
                for interval in pool.intervals():
                    intervals += 1
                    # The end of the interval on the load's own clock (schema §3: ``t``
                    # is seconds since the start), so lines are 1.0, 2.0, ... exactly.
                    t = round(interval.t0 + interval.length, 6)
                    # Full dumps every detail_every intervals, and always on the last
                    # one so the diagnosis sees where the ports went.
                    detail = intervals % max(cfg.detail_every, 1) == 0 or (
                        t >= load.duration - 1e-6 or flag.signum is not None
                    )
                    line: TimelineLine = {
                        "t": t,
                        "time": time.time(),
                        "load": interval.to_json(),
                        "client": client.sample(detail),
                        "server": server.sample(detail) if server else None,
                    }
                    writer.write(line)
                    totals.add(interval)
                    if prep.prom is not None:
                        prep.prom.update(line)
                    if on_interval is not None:
                        on_interval(line)
            except KeyboardInterrupt:
                # The second Ctrl-C: stop at once, keep what was measured.
                flag.signum = signal.SIGINT
            except Exception as exc:
                # Stopping while workers still start can break their pipes: that is the
                # interruption asked for, not a failure.
                if flag.signum is None:
                    failure = exc
            finally:
                pool.stop()
        writer.close()
    interrupted = flag.signum is not None or failure is not None
    if server is not None and server.lost:
        warnings.append(
            f"{len(server.lost)} scrapes of {cfg.watch_remote} failed (first: "
            f"{server.lost[0]}); those timeline lines have server: null"
        )
    if failure is not None:
        warnings.append(f"the run stopped early: {failure}")
    summary = build_summary(
        totals=totals.to_json(),
        started=started,
        # The load's own clock: scheduling time, without the final drain of in-flight
        # connections (up to --timeout) and without process start-up.
        duration_s=totals.duration,
        interrupted=interrupted,
        target=str(load.target.url),
        environment=prep.environment,
        # As given, with the built-in server's real address in place of the placeholder.
        config=dataclasses.replace(cfg, load=load).to_json(),
        warnings=warnings,
    )
    write_summary(cfg.out_dir, summary)
    if failure is not None:
        raise failure
    try:
        verdict = diagnose(list(read_timeline(cfg.out_dir)), summary)
    except Exception as exc:
        # A bug in the diagnosis must not cost the user the run: every measurement is
        # already on disk, and `tcpchurn report` can be re-run on it later.
        warnings.append(f"the diagnosis failed ({type(exc).__name__}: {exc})")
        summary["warnings"] = list(warnings)
        verdict = ([], [])
    apply_verdict(summary, *verdict)
    write_summary(cfg.out_dir, summary)
    html = write_html(cfg.out_dir) if cfg.html else None
    return RunResult(cfg.out_dir, summary, intervals, interrupted, warnings, html)
