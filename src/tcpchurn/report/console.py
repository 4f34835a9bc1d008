"""The terminal view of a run: a live dashboard per interval and the final summary.

Both are pure functions from the run's JSON (docs/schema.md §3 timeline lines and §4
summary) to rich renderables, so tests render them into
``Console(file=io.StringIO(), width=100)`` from recorded dicts (STYLE.md rule 12).
:class:`Dashboard` only adds the ``rich.live.Live`` around them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

LATENCY_KINDS = ("connect", "ttfb", "total", "schedule_lag")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")


@dataclass(frozen=True)
class TableRow:
    """One kernel table: how full it is, against which limit."""

    name: str
    used: int | None
    limit: int | None

    @property
    def share(self) -> float | None:
        """``used / limit``, or ``None`` when either is unknown."""
        if self.used is None or not self.limit or self.limit <= 0:
            return None
        return self.used / self.limit


def _get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or ``None`` as soon as a level is missing or null."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _int_sysctl(sysctls: Mapping[str, Any], name: str) -> int | None:
    value = sysctls.get(name)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def kernel_tables(sample: Mapping[str, Any] | None, sysctls: Mapping[str, Any]) -> list[TableRow]:
    """The tables a churn run fills, from one kernel sample (schema §1) and the sysctls.

    ``sysctls`` maps dotted names to values (the environment of §4); a limit that is not
    known shows as ``?``.
    """
    if sample is None:
        return []
    rows = [
        TableRow(
            "TIME_WAIT",
            _get(sample, "sockstat", "tw"),
            _int_sysctl(sysctls, "net.ipv4.tcp_max_tw_buckets"),
        ),
        TableRow(
            "orphans",
            _get(sample, "sockstat", "orphan"),
            _int_sysctl(sysctls, "net.ipv4.tcp_max_orphans"),
        ),
    ]
    if _get(sample, "conntrack", "loaded"):
        ct = sample["conntrack"]
        rows.append(TableRow("conntrack", ct.get("count"), ct.get("max")))
    dests = sample.get("destinations")
    if isinstance(dests, list) and dests:
        top = dests[0]
        rows.append(TableRow(f"ports to {top.get('remote')}", top.get("sockets"),
                             top.get("port_range")))
    listens = sample.get("listen")
    if isinstance(listens, list) and listens:
        q = max(listens, key=lambda q: (q.get("queue") or 0) / max(q.get("backlog") or 1, 1))
        rows.append(TableRow(f"accept queue {q.get('local')}", q.get("queue"), q.get("backlog")))
    proc = _get(sample, "fds", "process") or {}
    rows.append(TableRow("fds (process)", proc.get("open"), proc.get("soft")))
    system = _get(sample, "fds", "system") or {}
    rows.append(TableRow("fds (system)", system.get("allocated"), system.get("max")))
    return rows


# Counters whose increase means a limit is biting (KERNEL.md §1): shown when non-zero.
ALARMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ListenOverflows", ("counters_delta", "TcpExt", "ListenOverflows")),
    ("ListenDrops", ("counters_delta", "TcpExt", "ListenDrops")),
    ("TCPTimeWaitOverflow", ("counters_delta", "TcpExt", "TCPTimeWaitOverflow")),
    ("TCPSynRetrans", ("counters_delta", "TcpExt", "TCPSynRetrans")),
    ("TCPAbortOnMemory", ("counters_delta", "TcpExt", "TCPAbortOnMemory")),
    ("conntrack drop", ("conntrack", "stat_delta", "drop")),
    ("conntrack insert_failed", ("conntrack", "stat_delta", "insert_failed")),
    ("softnet dropped", ("softnet_delta", "dropped")),
)


def alarms(sample: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """The limit counters that rose during the interval of ``sample``, with how much."""
    out = []
    for name, path in ALARMS:
        value = _get(sample, *path)
        if isinstance(value, int) and value > 0:
            out.append((name, value))
    return out


def _fmt_int(v: int | None) -> str:
    return "?" if v is None else f"{v:,}"


def _fmt_share(share: float | None) -> Text:
    if share is None:
        return Text("-", style="dim")
    style = "red bold" if share >= 0.9 else "yellow" if share >= 0.5 else "green"
    return Text(f"{share:6.1%}", style=style)


def _fmt_ms(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:.2f}"


def latency_table(
    latency: Mapping[str, Any], title: str = "latency (ms, from scheduled start)"
) -> Table:
    """connect / ttfb / total / schedule_lag by percentile."""
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("")
    for p in PERCENTILES:
        table.add_column(p, justify="right")
    for kind in LATENCY_KINDS:
        row = latency.get(kind)
        if isinstance(row, Mapping):
            table.add_row(kind, *(_fmt_ms(row.get(p)) for p in PERCENTILES))
    return table


def errors_table(
    errors: Mapping[str, int], first_s: Mapping[str, float] | None = None, title: str = "errors"
) -> Table:
    """Errors by errno name, most frequent first, with their first occurrence."""
    table = Table(title=title, title_justify="left")
    table.add_column("error")
    table.add_column("count", justify="right")
    if first_s is not None:
        table.add_column("first at", justify="right")
    for name, count in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])):
        cells: list[str | Text] = [Text(name, style="red"), f"{count:,}"]
        if first_s is not None:
            first = first_s.get(name)
            cells.append("-" if first is None else f"{first:.3f} s")
        table.add_row(*cells)
    return table


def tables_table(
    client: Sequence[TableRow], server: Sequence[TableRow] | None, server_label: str = "server"
) -> Table:
    """Kernel tables with their share of their limit, client side and (if watched) server."""
    title = "kernel tables" if server is None else f"kernel tables (server: {server_label})"
    table = Table(title=title, title_justify="left")
    table.add_column("table")
    table.add_column("client", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("share", justify="right")
    if server is not None:
        table.add_column("server", justify="right")
        table.add_column("limit", justify="right")
        table.add_column("share", justify="right")
    by_name = {row.name: row for row in (server or [])}
    names = [row.name for row in client] + [r.name for r in (server or []) if r.name not in
                                             {c.name for c in client}]
    client_by_name = {row.name: row for row in client}
    for name in names:
        cells: list[str | Text] = [name]
        for side, present in ((client_by_name, True), (by_name, server is not None)):
            if not present:
                continue
            row = side.get(name)
            if row is None:
                cells += ["", "", Text("")]
            else:
                cells += [_fmt_int(row.used), _fmt_int(row.limit), _fmt_share(row.share)]
        table.add_row(*cells)
    return table


@dataclass
class DashboardState:
    """What the dashboard remembers between intervals: totals and the last line."""

    target: str
    duration: float
    client_sysctls: Mapping[str, Any] = field(default_factory=dict)
    server_sysctls: Mapping[str, Any] = field(default_factory=dict)
    last: Mapping[str, Any] | None = None
    attempted: int = 0
    ok: int = 0
    failed: int = 0
    late: int = 0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error_s: dict[str, float] = field(default_factory=dict)

    def add(self, line: Mapping[str, Any]) -> None:
        """Fold one timeline line (schema §3) into the totals."""
        self.last = line
        load = line.get("load") or {}
        for key in ("attempted", "ok", "failed", "late", "skipped"):
            setattr(self, key, getattr(self, key) + int(load.get(key) or 0))
        first = load.get("first_error_s") or {}
        for name, count in (load.get("errors") or {}).items():
            self.errors[name] = self.errors.get(name, 0) + int(count)
            # The engine's exact first time when it gives one, else the interval's end.
            self.first_error_s.setdefault(name, float(first.get(name, line.get("t") or 0.0)))


def render_dashboard(state: DashboardState) -> RenderableType:
    """One frame of the live dashboard from the state after the latest interval."""
    line = state.last or {}
    load: Mapping[str, Any] = line.get("load") or {}
    t = float(line.get("t") or 0.0)
    left = max(state.duration - t, 0.0)
    target_rate = load.get("target_rate")
    achieved = load.get("achieved_rate")
    head = Text()
    head.append(f"tcpchurn run {state.target}", style="bold")
    head.append(f"   t={t:.1f} s   {left:.1f} s left\n")
    head.append("rate: ")
    head.append(f"{achieved or 0:,.1f}/s", style="bold")
    head.append(f" achieved of {target_rate or 0:,.1f}/s target   ")
    head.append(
        f"inflight {load.get('inflight', 0):,}   late {load.get('late', 0):,}   "
        f"skipped {load.get('skipped', 0):,}\n"
    )
    head.append(
        f"total: {state.attempted:,} attempted, {state.ok:,} ok, {state.failed:,} failed"
    )
    if state.late or state.skipped:
        head.append(
            f"   generator behind schedule: {state.late:,} late, {state.skipped:,} skipped",
            style="yellow",
        )
    parts: list[RenderableType] = [head, latency_table(load.get("latency_ms") or {})]
    if state.errors:
        parts.append(errors_table(state.errors, state.first_error_s, "errors so far"))
    client_rows = kernel_tables(line.get("client"), state.client_sysctls)
    server_sample = line.get("server")
    server_rows = (
        kernel_tables(server_sample, state.server_sysctls) if server_sample is not None else None
    )
    if client_rows:
        label = str(_get(server_sample, "where") or "server")
        parts.append(tables_table(client_rows, server_rows, label))
    for side, sample in (("client", line.get("client")), ("server", server_sample)):
        rising = alarms(sample)
        if rising:
            text = ", ".join(f"{name} +{value:,}" for name, value in rising)
            parts.append(Text(f"{side} this interval: {text}", style="red"))
    return Group(*parts)


def _headroom_line(headroom: Sequence[Mapping[str, Any]]) -> str:
    if not headroom:
        return "nothing hit"
    parts = []
    for h in sorted(headroom, key=lambda h: -(h.get("share") or 0.0))[:4]:
        share = h.get("share")
        pct = "?" if share is None else f"{share:.1%}"
        parts.append(f"{h.get('limit')} ({h.get('side')}) {pct}")
    return "nothing hit; headroom: " + ", ".join(parts)


def render_summary(summary: Mapping[str, Any]) -> RenderableType:
    """The final text of a run from summary.json (schema §4)."""
    conns = summary.get("connections") or {}
    head = Text()
    title = "interrupted" if summary.get("interrupted") else "done"
    head.append(f"tcpchurn run {summary.get('target')}: {title}\n", style="bold")
    target_rate = float(summary.get("target_rate") or 0.0)
    achieved = float(summary.get("achieved_rate") or 0.0)
    head.append(f"rate: {achieved:,.1f}/s achieved of {target_rate:,.1f}/s target")
    if target_rate > 0:
        head.append(f" ({achieved / target_rate:.1%})")
    head.append(f" over {float(summary.get('duration_s') or 0.0):.1f} s\n")
    head.append(
        f"connections: {conns.get('attempted', 0):,} attempted, {conns.get('ok', 0):,} ok, "
        f"{conns.get('failed', 0):,} failed, {conns.get('late', 0):,} late, "
        f"{conns.get('skipped', 0):,} skipped"
    )
    if summary.get("generator_saturated"):
        head.append(
            "\ngenerator_saturated: tcpchurn itself could not keep the schedule "
            "(add --workers or lower --rate)",
            style="yellow",
        )
    for warning in summary.get("warnings") or []:
        head.append(f"\nwarning: {warning}", style="yellow")
    parts: list[RenderableType] = [head]
    errors = summary.get("errors") or {}
    if errors:
        parts.append(errors_table(errors, summary.get("first_error_s") or {}))
    parts.append(latency_table(summary.get("latency_ms") or {}))
    findings = summary.get("findings") or []
    if findings:
        table = Table(title="findings", title_justify="left")
        for col in ("limit", "side", "severity", "onset", "what"):
            table.add_column(col)
        for f in findings:
            onset = f.get("onset_s")
            table.add_row(
                Text(str(f.get("limit")), style="red bold"),
                str(f.get("side")),
                str(f.get("severity")),
                "-" if onset is None else f"{onset:.1f} s",
                str(f.get("title")),
            )
        parts.append(table)
        for f in findings:
            for fix in f.get("fix") or []:
                parts.append(Text(f"  fix ({f.get('limit')}): {fix}"))
    else:
        parts.append(Text(_headroom_line(summary.get("headroom") or []), style="green"))
    return Group(*parts)


class Dashboard:
    """The live dashboard: ``update(line)`` once per interval, ``close()`` at the end."""

    def __init__(self, state: DashboardState, console: Console | None = None) -> None:
        self.state = state
        self.console = console or Console(stderr=True)
        self._live = Live(
            render_dashboard(state), console=self.console, auto_refresh=False, transient=False
        )
        self._live.start()

    def update(self, line: Mapping[str, Any]) -> None:
        """Fold in one timeline line and redraw."""
        self.state.add(line)
        self._live.update(render_dashboard(self.state), refresh=True)

    def close(self) -> None:
        """Stop redrawing; the last frame stays on screen."""
        self._live.stop()
