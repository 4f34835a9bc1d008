"""``tcpchurn run``: options -> :class:`RunConfig` -> :func:`tcpchurn.runner.run` -> render.

A thin shell (STYLE.md rule 11): every check that needs the library (resolving the
target, the source addresses, the namespace) happens in the library and comes back as a
:mod:`tcpchurn.errors` class, which ``cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from tcpchurn.errors import BadValue

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(option: str, text: str, allow_zero: bool = False) -> float:
    """Seconds from ``"10"``, ``"10s"``, ``"2m"``, ``"1.5h"`` or ``"250ms"``.

    >>> parse_duration("--duration", "2m")
    120.0
    """
    m = _DURATION.match(text)
    if m is None:
        raise BadValue(option, text, "give seconds like 10, 10s, 2m, 1h or 500ms")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise BadValue(option, text, "give a duration greater than zero, like 10s")
    return seconds


def _default_out() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("tcpchurn-out") / stamp


HELP = """Sustain an exact, open-loop rate of NEW TCP connections against TARGET.

\b
TARGET is http://host[:port][/path] or host:port ([v6addr]:port for IPv6). With
--mode http (default) each connection carries one HTTP/1.1 request; with --mode
tcp it connects and sends nothing: it closes at once (--close client/reset) or
waits for the server to close (--close server). A host name is resolved once.
Without TARGET, tcpchurn starts its own server on 127.0.0.1 and targets it.

\b
Connections start on a schedule (open loop): a slow server does not slow the
generator down, and every latency is measured from the SCHEDULED start, so
nothing hides behind a slow generator. If tcpchurn itself cannot keep up, the
summary says `generator_saturated` instead of quietly running slower. The
response's times are the kernel's receive stamps: ttfb ends when its first
bytes arrived, total when it was complete (its last bytes; or the server's FIN
when only that delimits it), not when tcpchurn got to them.

\b
Who closes first decides where TIME_WAIT piles up (it lasts 60 s, fixed):
  --close server   the client waits for the server to close (HTTP/1.0 style):
                   TIME_WAIT on the SERVER; the client's port is free at once.
  --close client   the client closes first after the response: TIME_WAIT on the
                   CLIENT, which holds each ephemeral port for 60 s, so one
                   source address reaches at most ~28232/60 = 470 conn/s to one
                   server ip:port before connect() fails with EADDRNOTAVAIL.
  --close reset    the client aborts with RST (SO_LINGER 0): no TIME_WAIT on
                   either side, and conntrack keeps the entry 10 s, not 120 s.

\b
Source addresses: the ephemeral port range is per (source ip, dest ip, dest
port), so each --source-ip (an address, or a CIDR expanded to its addresses,
all configured on this host) multiplies the connections you can hold open or
in TIME_WAIT towards one server.

\b
Files: OUT/timeline.jsonl (one line per interval, flushed as it goes) and
OUT/summary.json (also on Ctrl-C / SIGTERM, with "interrupted": true).

\b
Exit codes: 0 rate held and nothing found, 1 a limit was hit (see findings),
2 bad option, 3 the target never worked, 130 interrupted.

\b
Examples:
  tcpchurn run                                    built-in server, 1000/s, 10 s
  tcpchurn run http://127.0.0.1:8080/ --rate 5000 --duration 2m --ramp 10s
  tcpchurn run 198.18.0.2:80 --mode tcp --close client --source-ip 198.18.0.0/28
  tcpchurn run http://198.18.0.2/ --watch-netns srv --html --out runs/a
  tcpchurn run http://127.0.0.1/ --json --quiet > summary.json
"""


@click.command("run", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", required=False)
@click.option("--rate", default="1000", show_default=True, metavar="R",
              help="New connections per second (all workers together).")
@click.option("--duration", default="10", show_default=True, metavar="D",
              help="How long to run: 10, 10s, 2m, 1h.")
@click.option("--ramp", default="0", show_default=True, metavar="S",
              help="Ramp the rate linearly from 0 over this long.")
@click.option("--arrival", type=click.Choice(["uniform", "poisson"]), default="uniform",
              show_default=True, help="Evenly spaced starts, or a Poisson process.")
@click.option("--mode", type=click.Choice(["http", "tcp"]), default="http",
              show_default=True,
              help="http: one request per connection; tcp: connect, send nothing.")
@click.option("--close", "close", type=click.Choice(["server", "client", "reset"]),
              default="server", show_default=True, help="Who ends each connection (see above).")
@click.option("--timeout", default="5", show_default=True, metavar="S",
              help="Give up on a connect or a response after this long.")
@click.option("--source-ip", "source_ips", multiple=True, metavar="IP|CIDR",
              help="Source address(es) to spread connections over; repeatable.")
@click.option("--workers", type=int, default=None, metavar="N",
              help="Generator processes (default: one per core).")
@click.option("--max-inflight", type=int, default=None, metavar="N",
              help="Cap on open connections (default 50000): beyond it, due connections "
                   "wait for one to end and count as late; after max(timeout, 1 s), as "
                   "skipped.  Looking for the highest rate a server sustains? Cap near "
                   "its concurrency (e.g. 256): a backlog pushed into it at once makes "
                   "every connection dearer for it (docs/run.md).")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Run each worker on a CPU of its own (with 2 workers or more, and no "
                   "more than the CPUs): a stall of one CPU then delays one worker, whose "
                   "due connections the others start (docs/run.md).")
@click.option("--interval", default="1", show_default=True, metavar="S",
              help="Seconds per timeline line / dashboard refresh.")
@click.option("--detail-every", type=int, default=5, show_default=True, metavar="N",
              help="Full per-state and per-destination dump every N intervals (and on the "
                   "last); they walk the whole socket hash, so not every interval.")
@click.option("--watch-netns", default=None, metavar="NAME",
              help="Also sample the kernel tables of this network namespace (the server's).")
@click.option("--watch-pid", type=int, default=None, metavar="PID",
              help="Also sample the namespace and fds of this process (the server).")
@click.option("--watch-remote", default=None, metavar="URL",
              help="Also sample a remote `tcpchurn watch --prometheus` exporter.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run directory (default ./tcpchurn-out/<UTC timestamp>).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json on stdout.")
@click.option("--quiet", "-q", is_flag=True,
              help="No live dashboard and no final text: only the files, warnings, errors.")
@click.option("--prometheus", "prometheus_port", type=int, default=None, metavar="PORT",
              help="Serve live metrics on this port.")
@click.option("--html", is_flag=True, help="Also write OUT/report.html.")
@click.option("--seed", type=int, default=None, help="Seed of the Poisson schedule.")
def run(**opts: Any) -> int:
    """Entry point of ``tcpchurn run`` (see HELP)."""
    from tcpchurn.cli.run_config import build_run_config

    cfg = build_run_config(opts, default_out=_default_out())
    return _execute(cfg, as_json=bool(opts["as_json"]), quiet=bool(opts["quiet"]))


def _execute(cfg: Any, as_json: bool, quiet: bool) -> int:
    from rich.console import Console

    from tcpchurn import runner
    from tcpchurn.report import console as view

    live = not quiet and sys.stderr.isatty()
    dashboard: list[view.Dashboard] = []  # started once the run is ready (on_start)

    def on_start(env: dict[str, Any], server_sysctls: dict[str, Any]) -> None:
        if live:
            state = view.DashboardState(
                target=cfg.target_label, duration=cfg.load.duration,
                client_sysctls=env.get("sysctls") or {}, server_sysctls=server_sysctls,
            )
            dashboard.append(view.Dashboard(state, Console(stderr=True)))

    def on_interval(line: dict[str, Any]) -> None:
        if dashboard:
            dashboard[0].update(line)

    # Plain lines, not rich: a warning or an error is one line whatever the width.
    for warning in runner.preflight_warnings(cfg):
        click.echo(f"tcpchurn: warning: {warning}", err=True)
    try:
        result = runner.run(cfg, on_interval=on_interval, on_start=on_start)
    finally:
        if dashboard:
            dashboard[0].close()
    if as_json:
        sys.stdout.write(json.dumps(result.summary, indent=2) + "\n")
    elif not quiet:
        Console().print(view.render_summary(result.summary))
    if not quiet:
        click.echo(f"wrote {result.out_dir}{os.sep}", err=True)
        if result.html is not None:
            click.echo(f"report: {result.html}", err=True)
    if result.target_never_worked and not result.interrupted:
        errors = result.summary["errors"]
        worst = max(errors.items(), key=lambda kv: kv[1], default=("?", 0))
        click.echo(
            f"tcpchurn: error: no connection to {result.summary['target']} succeeded "
            f"({worst[0]} x{worst[1]}): check the address and that the server is up",
            err=True,
        )
    return result.exit_code
