"""``tcpchurn watch``: every kernel table connection churn fills, live.

Options -> :class:`~tcpchurn.kernel.watcher.WatchConfig` -> :func:`watch_samples` ->
one of three outputs: the rich live view (default), JSON lines (``--json``, exactly
docs/schema.md §1, flushed every interval) and/or a Prometheus endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import click

from tcpchurn.errors import BadValue
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls
from tcpchurn.kernel.watcher import WatchConfig, is_full, watch_samples, with_carried


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _start_prometheus(
    port: int, side: str, addr: str
) -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
    from tcpchurn.report import prometheus

    if not 1 <= port <= 65535:
        raise BadValue("--prometheus", port, "give a TCP port between 1 and 65535")
    registry = prometheus.make_registry()
    metrics = prometheus.KernelMetrics(registry, side)
    try:
        stop = prometheus.start_server(registry, port, addr)
    except OSError as exc:
        raise BadValue(
            "--prometheus",
            port,
            f"cannot listen on {addr}:{port} ({exc.strerror}): pick another port"
            " or an address of this host for --prometheus-addr",
        ) from exc
    return metrics.update, stop


@click.command("watch")
@click.option("--netns", metavar="NAME", help="Watch this network namespace (ip netns list).")
@click.option("--pid", type=int, metavar="PID", help="Watch the namespace (and fds) of a process.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between samples."
)
@click.option("--count", type=int, default=None, help="Stop after N samples.")
@click.option("--once", is_flag=True, help="One full sample, then exit.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON line per sample (docs/schema.md §1)."
)
@click.option(
    "--prometheus",
    "prom_port",
    type=int,
    metavar="PORT",
    help="Serve the samples on http://127.0.0.1:PORT/metrics.",
)
@click.option(
    "--prometheus-addr",
    "prom_addr",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDR",
    help="Address for --prometheus; give this host's address (or 0.0.0.0) so that"
    " `tcpchurn run --watch-remote http://THIS_HOST:PORT/metrics` on the client can scrape it.",
)
@click.option(
    "--detail-every",
    type=int,
    default=5,
    show_default=True,
    metavar="N",
    help="Full per-state and per-destination dump every N samples.",
)
def watch(
    netns: str | None,
    pid: int | None,
    interval: float,
    count: int | None,
    once: bool,
    as_json: bool,
    prom_port: int | None,
    prom_addr: str,
    detail_every: int,
) -> None:
    """Watch TIME_WAIT, conntrack, accept queues, ports and fds against their limits.

    \b
      tcpchurn watch                          this namespace, live, every second
      tcpchurn watch --netns srv --json       JSON lines for a namespace
      tcpchurn watch --pid 1234 --once        one full sample of a process's namespace
      tcpchurn watch --prometheus 9464        also serve 127.0.0.1:9464/metrics
      tcpchurn watch --prometheus 9464 --prometheus-addr 0.0.0.0
                                              on a server, for `run --watch-remote`
    """
    config = WatchConfig(interval=interval, count=count, detail_every=detail_every).check()
    if once:  # one full sample: every state by family, destinations
        config = dataclasses.replace(config, count=1, detail_every=1)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    with Procfs(netns=netns, pid=pid) as procfs:
        update: Callable[[dict[str, Any]], None] | None = None
        stop: Callable[[], None] | None = None
        if prom_port is not None:
            update, stop = _start_prometheus(prom_port, procfs.label, prom_addr)
        try:
            pairs = with_carried(watch_samples(procfs, config))
            if as_json:
                _emit_json(pairs, update)
            else:
                _live(pairs, procfs, update, once)
        finally:
            if stop is not None:
                stop()


Pairs = Iterable[tuple[dict[str, Any], dict[str, Any]]]


def _emit_json(pairs: Pairs, update: Callable[[dict[str, Any]], None] | None) -> None:
    out = sys.stdout
    for sample, view in pairs:
        if update is not None:
            update(view)
        try:
            out.write(json.dumps(sample, separators=(",", ":")) + "\n")
            out.flush()  # a reader (jq, tail -f, another process) sees every interval
        except BrokenPipeError:
            # The reader went away (`| head -3`): that ends the watch, it is no error.
            # Point stdout at /dev/null so the interpreter's final flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return


def _live(
    pairs: Pairs,
    procfs: Procfs,
    update: Callable[[dict[str, Any]], None] | None,
    once: bool,
) -> None:
    from rich.console import Console
    from rich.live import Live

    from tcpchurn.report.watchview import render_watch

    console = Console()
    sysctls: dict[str, Any] = dict(read_sysctls(procfs).to_json())
    if once:
        for _sample, view in pairs:
            if update is not None:
                update(view)
            console.print(render_watch(view, sysctls))
        return
    with Live(console=console, auto_refresh=False, transient=False) as live:
        for sample, view in pairs:
            if update is not None:
                update(view)
            if is_full(sample):
                sysctls = dict(read_sysctls(procfs).to_json())  # limits can change too
            live.update(render_watch(view, sysctls), refresh=True)
