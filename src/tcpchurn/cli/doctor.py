"""``tcpchurn doctor``: audit this host's (or a namespace's) limits and forecast a plan.

A thin shell (STYLE.md rule 11): options -> :class:`~tcpchurn.diagnose.forecast.Plan` ->
:func:`tcpchurn.diagnose.doctor.examine` -> a rich rendering, ``--json``, or ``--emit``.
Nothing changes on the machine without ``--apply``; ``--revert`` undoes it exactly.
"""

from __future__ import annotations

import json
import os

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tcpchurn.diagnose.doctor import DoctorReport, examine, parse_target
from tcpchurn.diagnose.forecast import CLOSE_MODES, Plan, TableForecast
from tcpchurn.diagnose.rules import RULES
from tcpchurn.diagnose.tuning import Change, apply_sysctls, revert_sysctls, state_path
from tcpchurn.errors import BadValue, NotPermitted
from tcpchurn.kernel.procfs import Procfs

_LIMITS_HELP = "\b\nLimits it knows (docs/limits.md):\n" + "\n".join(
    f"  {r.id:<20} {r.title}" for r in RULES
)


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "never" if unit == "s" else "-"
    return f"{x:,.1f}{unit}" if x < 100 else f"{x:,.0f}{unit}"


def _style(row: TableForecast, first: TableForecast | None, plan: Plan) -> str:
    if row is first:
        return "bold red"
    return "yellow" if row.fills_within(plan.duration * 4) else ""


def render(report: DoctorReport, console: Console) -> None:
    """The forecast table (first to fill highlighted), the audit, and the fixes."""
    plan = report.plan
    console.print(
        f"[bold]tcpchurn doctor[/] {report.where}: {plan.rate:g} new connections/s for "
        f"{plan.duration:g} s, {plan.close} closes first, {plan.source_ips} source address(es), "
        f"{plan.dest_tuples} destination(s){', loopback' if plan.loopback else ''}"
    )
    table = Table(title="Forecast, table by table", title_justify="left", header_style="bold")
    for col in ("limit", "side", "capacity", "steady state", "full after", "max rate/s"):
        table.add_column(col, justify="left" if col in ("limit", "side") else "right")
    first = report.first_to_fill
    for row in report.forecast:
        table.add_row(row.limit, row.side, _fmt(row.capacity), _fmt(row.steady_state),
                      _fmt(row.seconds_to_full, "s"), _fmt(row.max_sustainable_rate),
                      style=_style(row, first, plan))
    console.print(table)
    for row in report.forecast:
        console.print(Text(f"  {row.limit}: ", style=_style(row, first, plan) or "bold")
                      + Text(row.why))
    if first is None:
        console.print("[green]No table fills during this plan.[/]")
    elif first.fills_within(plan.duration):
        console.print(f"[bold red]{first.limit} fills first, after {first.seconds_to_full:g} s "
                      f"(the run lasts {plan.duration:g} s).[/]")
    else:
        console.print(f"{first.limit} would fill after {first.seconds_to_full:g} s, "
                      f"beyond this {plan.duration:g} s run.")
    audit = Table(title="Sysctls (KERNEL.md §7 first)", title_justify="left", header_style="bold")
    audit.add_column("sysctl", max_width=22, overflow="fold")
    audit.add_column("value", max_width=12, overflow="fold")
    audit.add_column("scope", no_wrap=True)
    audit.add_column("what it means for this plan", overflow="fold", ratio=1)
    for a in report.audit:
        value = " ".join(map(str, a.value)) if isinstance(a.value, tuple) else str(a.value)
        shown = "absent" if a.value is None else value
        audit.add_row(a.sysctl.rsplit(".", 1)[-1], shown, a.scope, a.note)
    console.print(audit)
    soft, hard = report.rlimit_nofile
    console.print(f"RLIMIT_NOFILE of this shell: soft {soft}, hard {hard}")
    if not report.fixes:
        console.print("[green]Nothing to fix for this plan.[/]")
        return
    console.print("[bold]Fixes[/] (nothing changes without --apply):")
    for fix in report.fixes:
        console.print(Text(f"  {fix.limit}: ", style="bold") + Text(fix.summary))
        for line in fix.lines()[1:]:
            console.print(Text(f"      {line}"))
    if report.settings:
        changes = ", ".join(f"{k}={v}" for k, v in report.settings.items())
        console.print(f"--apply would set here: {changes}")


def _print_changes(what: str, changes: list[Change], console: Console) -> None:
    if not changes:
        console.print(f"{what}: nothing to change")
    for c in changes:
        console.print(f"{what}: {c.name}: {c.before} -> {c.after}")


@click.command("doctor", context_settings={"help_option_names": ["-h", "--help"]},
               epilog=_LIMITS_HELP)
@click.option("--rate", type=float, default=1000.0, show_default=True,
              help="Planned new connections per second.")
@click.option("--duration", type=float, default=60.0, show_default=True,
              help="Planned run length in seconds.")
@click.option("--target", default=None, metavar="HOST:PORT",
              help="The server; without it, tcpchurn's own loopback server.")
@click.option("--close", type=click.Choice(CLOSE_MODES), default="server", show_default=True,
              help="Who closes first: the server (HTTP/1.0), the client, or reset (RST).")
@click.option("--source-ips", type=int, default=1, show_default=True,
              help="Client source addresses.")
@click.option("--dest-tuples", type=int, default=1, show_default=True,
              help="Distinct destination ip:port pairs.")
@click.option("--lifetime", type=float, default=0.01, show_default=True,
              help="Seconds one connection stays open (for descriptors).")
@click.option("--netns", default=None, metavar="NAME",
              help="Audit this network namespace instead of the host.")
@click.option("--emit", type=click.Choice(["sysctl", "nft"]), default=None,
              help="Print only a sysctl.d file, or an nft ruleset (notrack both directions).")
@click.option("--apply", "do_apply", is_flag=True,
              help="Apply the sysctl fixes here (root); previous values saved for --revert.")
@click.option("--revert", "do_revert", is_flag=True,
              help="Restore the values saved by --apply.")
@click.option("--json", "as_json", is_flag=True, help="Print docs/schema.md §6 JSON.")
def doctor(rate: float, duration: float, target: str | None, close: str, source_ips: int,
           dest_tuples: int, lifetime: float, netns: str | None, emit: str | None,
           do_apply: bool, do_revert: bool, as_json: bool) -> None:
    """Audit limits and forecast, table by table, when a planned load exhausts them.

    \b
    tcpchurn doctor --rate 1000                       loopback, server closes first
    tcpchurn doctor --rate 1000 --target 198.18.0.2:80 --close client
    tcpchurn doctor --rate 5000 --target web.example:80 --emit nft | nft -c -f -
    sudo tcpchurn doctor --rate 2000 --close client --apply    (then --revert)
    """
    for option, value in (("--rate", rate), ("--duration", duration), ("--lifetime", lifetime)):
        if not value > 0 or value != value or value == float("inf"):
            raise BadValue(option, value, "give a positive finite number")
    for option, count in (("--source-ips", source_ips), ("--dest-tuples", dest_tuples)):
        if count < 1:
            raise BadValue(option, count, "give 1 or more")
    if do_apply and do_revert:
        raise BadValue("--apply/--revert", "both", "give one of them")
    if (do_apply or do_revert) and (emit or as_json):
        raise BadValue("--apply/--revert", "with --emit/--json", "run them separately")
    tgt = parse_target(target) if target else None
    if emit == "nft" and tgt is None:
        raise BadValue("--emit nft", "without --target", "give --target HOST:PORT for the port")
    plan = Plan(rate=rate, duration=duration, close=close, source_ips=source_ips,
                dest_tuples=dest_tuples, loopback=tgt.loopback if tgt else True,
                lifetime_s=lifetime)
    console = Console(highlight=False)
    state = state_path(netns)
    with Procfs(netns=netns) as procfs:
        if do_revert:
            if os.geteuid() != 0:
                raise NotPermitted("--revert writes sysctls: run as root")
            _print_changes("reverted", revert_sysctls(procfs, state), console)
            return
        report = examine(plan, procfs, tgt.port if tgt else None)
        if do_apply:
            if os.geteuid() != 0:
                raise NotPermitted("--apply writes sysctls: run as root")
            _print_changes("applied", apply_sysctls(procfs, report.settings, state), console)
            for name, setting in report.not_here.items():
                console.print(f"not applied here: {name} = {setting}")
            if report.settings:
                console.print(f"previous values saved in {state}; undo with --revert")
            return
    if emit == "sysctl":
        click.echo(report.sysctl_text, nl=False)
    elif emit == "nft":
        assert report.nft_text is not None
        click.echo(report.nft_text, nl=False)
    elif as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
    else:
        render(report, console)
