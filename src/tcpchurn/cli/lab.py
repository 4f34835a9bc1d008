"""``tcpchurn lab list | run NAME | cleanup``: the lab's thin shell (STYLE.md rule 11).

Options -> :class:`LabOptions` -> :func:`tcpchurn.lab.runner.run_scenario` -> a rendering
(plain lines and rich tables here; the library never prints).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tcpchurn.errors import BadValue
from tcpchurn.lab.results import LabResult, PassResult
from tcpchurn.lab.runner import LabOptions, cleanup, run_scenario
from tcpchurn.lab.scenarios import SCENARIOS, by_name
from tcpchurn.lab.servers import SERVERS


def _progress(quiet: bool) -> Any:
    start = time.monotonic()

    def emit(line: str) -> None:
        if not quiet:
            print(f"lab {time.monotonic() - start:6.1f}s  {line}", file=sys.stderr, flush=True)

    return emit


@click.group("lab", context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Reproduce each failure mode in network namespaces against real servers.

    \b
    Needs root. The host is left exactly as found: every change is journaled in
    /run/tcpchurn/ before it is made and undone at the end, on Ctrl-C or SIGTERM, and by
    the next lab start (or `tcpchurn lab cleanup`) after a SIGKILL.
    """


@lab.command("list")
def list_() -> None:
    """List the scenarios and the limit each must be diagnosed as."""
    table = Table(box=None, show_header=True, header_style="bold")
    for col in ("scenario", "server", "load", "expected", "what it does"):
        table.add_column(col, overflow="fold")
    for s in SCENARIOS:
        load = f"{s.load.rate:g}/s {s.load.duration:g}s close={s.load.close}"
        table.add_row(s.name, s.server.kind, load, s.expected or "(none)", s.description)
    Console(width=120).print(table)


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadValue("--rate", text, "give connections per second, like 1000") from None
    if not 0 < value <= 100_000:
        raise BadValue("--rate", text, "give a rate between 1 and 100000 per second")
    return value


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    raw = text.strip().lower().removesuffix("s")
    try:
        value = float(raw)
    except ValueError:
        raise BadValue("--duration", text, "give seconds, like 10 or 10s") from None
    if not 0 < value <= 600:
        raise BadValue("--duration", text, "give a duration between 1 and 600 seconds")
    return value


@lab.command("run")
@click.argument("name")
@click.option("--server", type=click.Choice(SERVERS), default=None,
              help="Target server (default: the scenario's).")
@click.option("--rate", default=None, metavar="R", help="New connections per second.")
@click.option("--duration", default=None, metavar="D", help="Seconds of load per pass.")
@click.option("--source-ips", "client_addrs", type=click.IntRange(1, 200), default=None,
              metavar="N", help="Client source addresses (198.18.0.1, .11, .12, ...).")
@click.option("--fix", is_flag=True, help="Apply the diagnosis' fix and run again.")
@click.option("--out", "out_dir", default=None, metavar="DIR",
              help="Where runs are written (default out/lab-NAME-TIME).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def run(name: str, server: str | None, rate: str | None, duration: str | None,
        client_addrs: int | None, fix: bool, out_dir: str | None, as_json: bool,
        quiet: bool) -> int:
    """Run scenario NAME (see `tcpchurn lab list`).

    Exit 0 when the expected limit was named first (and, with --fix, gone after the
    fix), 1 otherwise."""
    scenario = by_name(name)
    opts = LabOptions(
        server=server, rate=_rate(rate), duration=_duration(duration),
        client_addrs=client_addrs, fix=fix,
        out_dir=out_dir or f"out/lab-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
    )  # fmt: skip
    result = run_scenario(scenario, opts, _progress(quiet))
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render(result, Console(width=110))
    return 0 if result.ok else 1


@lab.command("cleanup")
def cleanup_cmd() -> None:
    """Undo what a killed lab left behind, from its journal."""
    undone = cleanup()
    if not undone:
        print("nothing to clean up: no lab journal in /run/tcpchurn")
    for line in undone:
        print(line)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                         for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _rows(p: PassResult) -> dict[str, str]:
    summary = p.summary or {}
    conns = summary.get("connections") or {}
    peak = max((s.conntrack_count or 0 for s in p.samples), default=None)
    rows = {
        "first finding": p.first or "none",
        "all findings": _fmt(p.limits),
        "target rate": _fmt(summary.get("target_rate")),
        "achieved rate": _fmt(summary.get("achieved_rate")),
        "connections ok / failed": f"{_fmt(conns.get('ok'))} / {_fmt(conns.get('failed'))}",
        "errors": _fmt(summary.get("errors")),
        "server conntrack peak": _fmt(peak),
        "conntrack full after": f"{p.stall_s:.2f} s" if p.stall_s is not None else "never",
        "output": p.out_dir,
    }
    if p.tuples is not None:
        t = p.tuples
        rows["conntrack 4-tuples"] = (f"{t.distinct_tuples:,} distinct of {t.entries:,} entries, "
                                      f"{t.sources} source(s)")
        rows["source-port parity"] = f"{t.even_ports:,} even / {t.odd_ports:,} odd"
    return rows


def render(result: LabResult, console: Console) -> None:
    """The scenario's verdict, before (and after) side by side, and the 2009 view."""
    s = result.scenario
    console.print(f"[bold]lab {s.name}[/]: {s.description}")
    table = Table(box=None)
    table.add_column("")
    table.add_column("before" if result.after else "run", overflow="fold")
    passes = [result.before] + ([result.after] if result.after else [])
    if result.after:
        table.add_column("after fix", overflow="fold")
    rendered = [_rows(p) for p in passes]
    for key in rendered[0]:
        table.add_row(key, *(r.get(key, "-") for r in rendered))
    console.print(table)
    if s.seed_view:
        _render_seed_view(result.before, console)
    if result.before.findings:
        f = result.before.findings[0]
        console.print(f"\n[bold]{f.get('title', f.get('limit'))}[/] ({f.get('side')}): "
                      f"{f.get('explanation', '')}")
        for line in f.get("fix") or []:
            console.print(f"  fix: {line}")
    if result.after is not None:
        console.print(f"\napplied the fix from {result.fix_source}")
    want = s.expected or "no finding"
    verdict = "OK" if result.ok else "NOT REPRODUCED"
    if not result.ok and result.inconclusive:
        verdict = ("INCONCLUSIVE (tcpchurn's own generator fell behind: the machine is busy;"
                   " run again)")
    console.print(f"\n{verdict}: expected {want} first"
                  + (", gone after the fix" if result.after and s.expected else ""))


def _render_seed_view(p: PassResult, console: Console) -> None:
    table = Table(title="what the 2009 reporter watched vs what filled (server namespace)",
                  title_justify="left", box=None)
    for col in ("t (s)", "wc -l /proc/net/tcp", "wc -l /proc/net/tcp6", "of which ::ffff:",
                "sockstat tw", "conntrack count", "accepted"):
        table.add_column(col, justify="right")
    last = -10.0
    base = next((x.passive_opens for x in p.samples if x.passive_opens is not None), 0) or 0
    for x in p.samples:
        if x.tcp6_lines is None or x.t - last < 2.0:
            continue
        last = x.t
        table.add_row(f"{x.t:.1f}", _fmt(x.tcp_lines), _fmt(x.tcp6_lines),
                      _fmt(x.tcp6_v4mapped), _fmt(x.tw), _fmt(x.conntrack_count),
                      _fmt((x.passive_opens or 0) - base))
    console.print(table)
