"""Two (or more) runs side by side: a table of what changed, and overlaid plots.

The typical use is a lab run before and after ``--fix``: same rate, and the table shows
that the errors went away, the latency tail came back down and the table that was full
now has headroom. Rows are built once (:func:`rows`) and rendered both as a rich table
for the terminal and as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from tcpchurn.errors import BadValue
from tcpchurn.jsonpath import dig as _get
from tcpchurn.report import html as H
from tcpchurn.report.plots import Plot, render_all
from tcpchurn.report.rundir import RunDir, open_run
from tcpchurn.report.series import LATENCIES, SIDES, Series, extract

# (label, value series, limit series) of the kernel tables whose peaks are compared.
TABLES = (("conntrack entries", "ct.count", "ct.max"),
          ("TIME_WAIT", "tw", "tw.limit"),
          ("busiest destination sockets", "ports", "ports.limit"),
          ("accept queue", "listen", "listen.limit"),
          ("process fds", "fds", "fds.limit"),
          ("orphans", "orphan", "orphan.limit"),
          ("SYN_SENT", "st.SYN_SENT", ""))


@dataclass(frozen=True)
class Loaded:
    """A run directory with its extracted series."""

    run: RunDir
    series: Series


@dataclass(frozen=True)
class Row:
    """One compared quantity: a section, a label and one formatted value per run."""

    section: str
    label: str
    values: tuple[str, ...]


def load(paths: Sequence[Path | str]) -> list[Loaded]:
    """Open every run directory and extract its series (BadValue for a bad one)."""
    if len(paths) < 2:
        raise BadValue("RUN_DIR", list(map(str, paths)), "give two run directories to compare")
    out = []
    for p in paths:
        run = open_run(p)
        out.append(Loaded(run, extract(run.timeline(), *run.sysctls())))
    return out


def labels(runs: Sequence[Loaded]) -> list[str]:
    """Distinct short names for the runs (directory names, numbered if they clash)."""
    names = [r.run.label for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{n}" for i, n in enumerate(names)]


def _findings(summary: Mapping[str, Any]) -> str:
    fs = summary.get("findings") or []
    if not fs:
        return "none"
    parts = []
    for f in fs:
        onset = f.get("onset_s")
        when = f" @ {H.fmt(onset)} s" if onset is not None else ""
        parts.append(f"{f.get('limit')} ({f.get('side')}){when}")
    return ", ".join(parts)


def _peak(series: Series, key: str, limit_key: str) -> str:
    peak = series.peak(key)
    if peak is None:
        return "–"
    limit = series.peak(limit_key) if limit_key else None
    if limit:
        return f"{peak:,.0f} / {limit:,.0f} ({100 * peak / limit:.0f}%)"
    return f"{peak:,.0f}"


def rows(runs: Sequence[Loaded]) -> list[Row]:
    """Every compared quantity, in display order."""
    sums = [r.run.summary for r in runs]
    out: list[Row] = []

    def add(section: str, label: str, vals: Sequence[object]) -> None:
        out.append(Row(section, label, tuple(v if isinstance(v, str) else H.fmt(v)
                                             for v in vals)))

    add("rate", "target (/s)", [s.get("target_rate") for s in sums])
    add("rate", "achieved (/s)", [s.get("achieved_rate") for s in sums])
    add("rate", "duration (s)", [s.get("duration_s") for s in sums])
    for k in ("attempted", "ok", "failed", "late", "skipped", "taken_over"):
        add("connections", k, [_get(s, "connections", k) for s in sums])
    names = sorted({n for s in sums for n in (s.get("errors") or {})})
    for n in names:
        add("errors", n, [(s.get("errors") or {}).get(n, 0) for s in sums])
    for kind in LATENCIES:
        for p in ("p50", "p99", "p999", "max"):
            add("latency (ms)", f"{kind.replace('_', ' ')} {p}",
                [_get(s, "latency_ms", kind, p) for s in sums])
    add("findings", "limits", [_findings(s) for s in sums])
    for side in SIDES:
        for label, key, limit in TABLES:
            vals = [_peak(r.series, f"{side}.{key}", f"{side}.{limit}" if limit else "")
                    for r in runs]
            if any(v != "–" for v in vals):
                add(f"peak ({side})", label, vals)
    return out


def text_table(runs: Sequence[Loaded]) -> Table:
    """The comparison as a rich table (the CLI prints it; the library never does)."""
    t = Table(title="tcpchurn compare", show_lines=False)
    t.add_column("", style="bold")
    t.add_column("")
    for name in labels(runs):
        t.add_column(name, justify="right")
    last = ""
    for r in rows(runs):
        t.add_row(r.section if r.section != last else "", r.label, *r.values,
                  end_section=False)
        last = r.section
    return t


def render_compare_html(runs: Sequence[Loaded], plots: Sequence[Plot]) -> str:
    """The comparison page: the table, then every plot with the runs overlaid."""
    names = labels(runs)
    body = [f"<h1>tcpchurn compare: {H.esc(' vs '.join(names))}</h1>",
            "<p class=\"sub\">" + " · ".join(
                f"{H.esc(n)}: {H.esc(r.run.summary.get('target', '?'))}"
                for n, r in zip(names, runs, strict=True)) + "</p>"]
    html_rows = []
    last = ""
    for r in rows(runs):
        html_rows.append([H.th(r.section if r.section != last else ""), H.th(r.label),
                          *(f"<td>{H.esc(v)}</td>" for v in r.values)])
        last = r.section
    body.append(H.table(["", "", *names], html_rows, "compare-table"))
    body.append("<h2 id=\"plots\">Plots (overlaid)</h2>")
    body += [H.figure(p) for p in plots]
    return H.page(f"tcpchurn compare: {' vs '.join(names)}", "".join(body))


def write_compare(runs: Sequence[Loaded], out: Path, max_points: int = 1000) -> Path:
    """Write the comparison HTML of :func:`load`-ed runs to ``out`` (and PNGs beside it)."""
    plots = render_all(list(zip(labels(runs), [r.series for r in runs], strict=True)),
                       [r.run.summary.get("findings") or [] for r in runs], max_points)
    out.parent.mkdir(parents=True, exist_ok=True)
    H.write_plots(plots, out)
    out.write_text(render_compare_html(runs, plots), encoding="utf-8")
    return out
