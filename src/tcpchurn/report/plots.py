"""The report's plots: one table of what to draw, one function that draws it (Agg, PNG).

Every kernel table is drawn against its limit (dashed, same colour), client and server
side, and every finding's onset is a vertical line on every time plot, so the moment a
table hit its limit lines up with the moment the rate fell and the errors began.

The same code draws one run (colour = side) or several overlaid for ``compare``
(colour = run, line style = side / series). Series are down-sampled with
:func:`~tcpchurn.report.downsample.minmax`, so a run of any length draws in seconds.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tcpchurn.report.downsample import minmax
from tcpchurn.report.series import LATENCIES, SIDES, Series

SIDE_COLOR = {"client": "#1f77b4", "server": "#d62728"}
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
         "#7f7f7f")
STYLES = ("-", "--", ":", "-.")
ONSET_COLOR = "#b00020"
DPI = 90


@dataclass(frozen=True)
class Line:
    """One series in a panel. ``{side}`` in ``key`` is filled per side in side panels."""

    key: str
    label: str
    limit: bool = False       # drawn dashed: a kernel limit, not a measurement
    limit_key: str = ""       # the limit this value is compared with (legend: peak = x %)


@dataclass(frozen=True)
class Panel:
    """One axes: its lines, drawn once per side when ``per_side``."""

    title: str
    ylabel: str
    lines: tuple[Line, ...]
    per_side: bool = False
    logy: bool = False
    empty: str = "no data in this run"


@dataclass(frozen=True)
class PlotSpec:
    """One figure: an HTML id, a title, the alt text, and its panels."""

    id: str
    title: str
    alt: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Plot:
    """A rendered figure."""

    id: str
    title: str
    alt: str
    png: bytes


def _table(key: str, label: str, limit_key: str, limit_label: str) -> tuple[Line, ...]:
    return (Line("{side}." + key, label, limit_key="{side}." + limit_key),
            Line("{side}." + limit_key, limit_label, limit=True))


def _side_panels(title: str, lines: Sequence[tuple[str, str]], ylabel: str) -> tuple[Panel, ...]:
    return tuple(Panel(f"{side}: {title}", ylabel,
                       tuple(Line(f"{side}.{k}", label) for k, label in lines),
                       empty=f"no {side}-side data in this run") for side in SIDES)


STATIC_SPECS: tuple[PlotSpec, ...] = (
    PlotSpec("plot-rate", "Target vs achieved rate",
             "New connections per second over time: target, achieved (started), "
             "completed and failed", (
                 Panel("new connections per second", "per second", (
                     Line("rate.target", "target", limit=True),
                     Line("rate.achieved", "achieved (started)"),
                     Line("rate.ok", "completed"),
                     Line("rate.failed", "failed"))),)),
    PlotSpec("plot-latency", "Latency percentiles over time",
             "Connect, time to first byte, total and schedule lag percentiles (p50, p99, "
             "max) per interval, in milliseconds from the scheduled start", tuple(
                 Panel(kind.replace("_", " "), "ms", (
                     Line(f"lat.{kind}.p50", "p50"), Line(f"lat.{kind}.p99", "p99"),
                     Line(f"lat.{kind}.max", "max")), logy=True,
                     empty=f"no {kind.replace('_', ' ')} measured")
                 for kind in LATENCIES)),
    PlotSpec("plot-conntrack", "Conntrack entries vs nf_conntrack_max",
             "Conntrack table count against nf_conntrack_max, client and server side", (
                 Panel("conntrack entries", "entries",
                       _table("ct.count", "entries", "ct.max", "nf_conntrack_max"),
                       per_side=True, empty="conntrack not loaded on either side"),)),
    PlotSpec("plot-timewait", "TIME_WAIT sockets vs tcp_max_tw_buckets",
             "TIME_WAIT sockets (IPv4 and IPv6) against tcp_max_tw_buckets, client and "
             "server side", (
                 Panel("TIME_WAIT sockets", "sockets",
                       (*_table("tw", "TIME_WAIT", "tw.limit", "tcp_max_tw_buckets"),
                        Line("{side}.tw.v4mapped", "of which v4-mapped in tcp6")),
                       per_side=True),)),
    PlotSpec("plot-ports", "Busiest destination's sockets vs the port range",
             "Sockets to the busiest destination against the ephemeral port range "
             "(ip_local_port_range)", (
                 Panel("sockets to the busiest destination", "sockets",
                       _table("ports", "sockets", "ports.limit", "port range"),
                       per_side=True, empty="no per-destination dump in this run"),)),
    PlotSpec("plot-listen", "Accept queue vs backlog",
             "Deepest listen (accept) queue against that listener's backlog", (
                 Panel("accept queue", "connections",
                       _table("listen", "queue", "listen.limit", "backlog"),
                       per_side=True, empty="no listening socket seen"),)),
    PlotSpec("plot-fds", "File descriptors vs limits",
             "Open file descriptors of the process against RLIMIT_NOFILE, and of the "
             "system against fs.file-max", (
                 Panel("process descriptors", "fds",
                       _table("fds", "open", "fds.limit", "RLIMIT_NOFILE soft"),
                       per_side=True),
                 Panel("system descriptors", "fds",
                       _table("fds.sys", "allocated", "fds.sys.limit", "fs.file-max"),
                       per_side=True))),
    PlotSpec("plot-orphans", "Orphan sockets vs tcp_max_orphans",
             "Orphaned sockets against tcp_max_orphans", (
                 Panel("orphan sockets", "sockets",
                       _table("orphan", "orphans", "orphan.limit", "tcp_max_orphans"),
                       per_side=True),)),
    PlotSpec("plot-states", "Sockets by TCP state",
             "Sockets by TCP state over time, client and server side",
             _side_panels("sockets by state", [
                 ("st.ESTABLISHED", "ESTABLISHED"), ("st.SYN_SENT", "SYN_SENT"),
                 ("st.CLOSE_WAIT", "CLOSE_WAIT"), ("st.FIN_WAIT2", "FIN_WAIT2")], "sockets")),
    PlotSpec("plot-drops", "Kernel drop and overflow counters",
             "Per-second kernel counters that mark a limit: conntrack drops, SYN "
             "retransmits, listen overflows, TIME_WAIT overflows, softnet drops",
             _side_panels("drops and overflows per second", [
                 ("ct.drop", "conntrack drop"), ("ct.insert_failed", "conntrack insert_failed"),
                 ("rate.TCPSynRetrans", "TCPSynRetrans"),
                 ("rate.ListenOverflows", "ListenOverflows"),
                 ("rate.TCPTimeWaitOverflow", "TCPTimeWaitOverflow"),
                 ("rate.SoftnetDropped", "softnet dropped")], "per second")),
)


# Which plot shows the evidence of each limit id (DESIGN.md's vocabulary); a finding in
# the report links to it.
PLOT_FOR_LIMIT: dict[str, str] = {
    "conntrack_full": "plot-conntrack", "ephemeral_ports": "plot-ports",
    "bind_port_conflict": "plot-ports", "tw_buckets": "plot-timewait",
    "dual_stack_tw": "plot-timewait", "accept_queue": "plot-listen",
    "syn_queue": "plot-drops", "orphans": "plot-orphans", "tcp_mem": "plot-timewait",
    "fd_process": "plot-fds", "fd_system": "plot-fds", "netdev_backlog": "plot-drops",
    "generator_saturated": "plot-latency", "server_refused": "plot-errors",
    "server_slow": "plot-latency", "unreachable": "plot-errors",
}


def specs(runs: Sequence[Series]) -> list[PlotSpec]:
    """Every plot for these runs: the static table plus errors by the errnos that occurred."""
    names = sorted({n[4:] for s in runs for n in s.names() if n.startswith("err.")})
    errors = PlotSpec("plot-errors", "Errors per second by errno",
                      "Failed connections per second by errno name", (
                          Panel("errors per second", "per second",
                                tuple(Line(f"err.{n}", n) for n in names),
                                empty="no errors in this run"),))
    out = list(STATIC_SPECS)
    out.insert(2, errors)
    return out


def onsets(findings: object) -> list[tuple[float, str]]:
    """``(onset_s, limit)`` of every finding that has an onset."""
    out: list[tuple[float, str]] = []
    if isinstance(findings, list):
        for f in findings:
            if isinstance(f, Mapping):
                t = f.get("onset_s")
                if isinstance(t, int | float) and not isinstance(t, bool):
                    out.append((float(t), str(f.get("limit", "?"))))
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


def _label(line: Line, key: str, side: str | None, run: str | None, series: Series,
           value_keys: dict[str, str]) -> str:
    parts = [p for p in (run, side, line.label) if p]
    label = " ".join(parts)
    if line.limit_key:
        peak = series.peak(key)
        limit = series.peak(value_keys[key])
        if peak is not None and limit:
            label += f" (peak {_fmt(peak)} = {100 * peak / limit:.1f}% of {_fmt(limit)})"
        elif peak is not None:
            label += f" (peak {_fmt(peak)})"
    return label


def _draw_panel(ax: Axes, panel: Panel, runs: Sequence[tuple[str, Series]],
                max_points: int, end: float) -> bool:
    compare = len(runs) > 1
    sides: tuple[str | None, ...] = SIDES if panel.per_side else (None,)
    drawn = False
    value_peak = 0.0
    limits: list[float] = []
    for ri, (run, series) in enumerate(runs):
        for si, side in enumerate(sides):
            for li, line in enumerate(panel.lines):
                key = line.key.format(side=side) if side else line.key
                ts, vs = series.get(key)
                if not ts:
                    continue
                limit_key = line.limit_key.format(side=side) if side else line.limit_key
                if compare:
                    color = RUN_COLORS[ri % len(RUN_COLORS)]
                    style = ":" if line.limit else STYLES[(si if side else li) % len(STYLES)]
                elif side is not None:
                    color = SIDE_COLOR[side]
                    style = "--" if line.limit else ("-" if li == 0 else ":")
                else:
                    color = "#222222" if line.limit else CYCLE[li % len(CYCLE)]
                    style = "--" if line.limit else "-"
                px, py = minmax(ts, vs, max_points)
                if line.limit and px[-1] < end:
                    # a limit holds until it changes: draw it to the end of the run, so
                    # a limit read once (with a sparse full dump) is still a line
                    px, py = [*px, end], [*py, py[-1]]
                if line.limit:
                    limits.append(max(py))
                else:
                    value_peak = max(value_peak, max(py))
                label = _label(line, key, side, run if compare else None, series,
                               {key: limit_key})
                # Full dumps (destinations, per-family states) come every few samples: a
                # sparse series gets markers, or one point would not be drawn at all.
                marker = "o" if len(px) < 20 and not line.limit else ""
                ax.plot(px, py, style, color=color, lw=1.0 if line.limit else 1.5,
                        label=label, drawstyle="steps-post" if line.limit else "default",
                        marker=marker, markersize=3.5)
                drawn = True
    ax.set_title(panel.title, fontsize=10, loc="left")
    ax.set_ylabel(panel.ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    if not drawn:
        ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center",
                color="#777777", fontsize=10)
        return False
    if panel.logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, _top(value_peak, limits))
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return True


def _top(value_peak: float, limits: Sequence[float]) -> float:
    """The y-axis top: every value, and every limit close enough to matter.

    A limit 50x above the data (262,144 conntrack entries vs 5,000 used) would flatten the
    data to the axis; such a limit is left off-scale, and the legend still says the share.
    """
    near = [lim for lim in limits if value_peak == 0 or lim <= 4 * value_peak]
    top = max([value_peak * 1.15, *(lim * 1.08 for lim in near)])
    return top if top > 0 else 1.0


def render(spec: PlotSpec, runs: Sequence[tuple[str, Series]],
           marks: Sequence[Sequence[tuple[float, str]]], max_points: int = 1000) -> Plot:
    """Draw one figure for ``runs`` (label, series) with each run's onset ``marks``."""
    n = len(spec.panels)
    fig = Figure(figsize=(11, 1.2 + 2.6 * n), dpi=DPI, layout="constrained")
    # The Agg canvas on this figure only: no display, no Tk, and no global
    # matplotlib.use() that would change the backend of a program importing us.
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    end = max((s.last_t() or 0.0) for _, s in runs) or 1.0
    for ax, panel in zip(axes, spec.panels, strict=True):
        _draw_panel(ax, panel, runs, max_points, end)
        ax.set_xlim(0, end)
        for ri, run_marks in enumerate(marks):
            color = ONSET_COLOR if len(runs) == 1 else RUN_COLORS[ri % len(RUN_COLORS)]
            for t, limit in run_marks:
                ax.axvline(t, color=color, ls="--", lw=1.2)
                ax.annotate(f"{limit} @ {t:g} s", (t, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", color=color,
                            fontsize=8)
    axes[-1].set_xlabel("seconds since start")
    fig.suptitle(spec.title, fontsize=12, x=0.01, ha="left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return Plot(spec.id, spec.title, spec.alt, buf.getvalue())


def render_all(runs: Sequence[tuple[str, Series]], findings: Sequence[Any],
               max_points: int = 1000) -> list[Plot]:
    """Every plot for ``runs``; ``findings[i]`` is run i's findings list (for onsets)."""
    marks = [onsets(f) for f in findings]
    return [render(spec, runs, marks, max_points) for spec in specs([s for _, s in runs])]
