"""The ``tcpchurn watch`` view: every table connection churn fills, against its limit.

Pure functions from one kernel sample (docs/schema.md §1) and the namespace's sysctls
(dotted name -> value, ``SysctlSnapshot.to_json()``) to rich renderables, so tests render
them into ``Console(file=io.StringIO(), width=100)`` (STYLE.md rule 12).

Each row is a table with its limit and the share used; per-second rows are events the
kernel counts when a table *was* full (drops, overflows).  The row closest to full is
marked ``▶`` and coloured, so the eye lands on the limit that will stop the run first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from tcpchurn.jsonpath import dig as _get

MARKER = "▶"
TOP_LISTENERS = 3
TOP_DESTINATIONS = 3


@dataclass(frozen=True)
class Row:
    """One line of the view.

    ``used``/``limit`` make a share when both are known; ``rate`` rows carry events per
    second (``used``) and have no limit: any non-zero value means a table overflowed.
    """

    name: str
    used: float | None
    limit: int | None = None
    detail: str = ""
    rate: bool = False

    @property
    def share(self) -> float | None:
        """``used / limit`` or ``None`` when it is not a bounded table."""
        if self.rate or self.used is None or not self.limit or self.limit <= 0:
            return None
        return self.used / self.limit

    @property
    def alarming(self) -> bool:
        """A table at >= 90% of its limit, or a drop/overflow counter that moved."""
        if self.rate:
            return bool(self.used)
        share = self.share
        return share is not None and share >= 0.9


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _per_second(sample: Mapping[str, Any], value: Any) -> float | None:
    """A per-interval delta as a rate; ``None`` on the first sample (no interval yet)."""
    interval = sample.get("interval")
    if not isinstance(value, int | float) or not isinstance(interval, int | float):
        return None
    return value / interval if interval > 0 else None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:,.1f}"


def _syn_queue_limit(sample: Mapping[str, Any]) -> int | None:
    """Sum of the listeners' backlogs: each SYN queue is bounded by its listener's
    backlog, not by tcp_max_syn_backlog while syncookies are on (KERNEL.md §F;
    net/ipv4/tcp_input.c tcp_conn_request, inet_csk_reqsk_queue_is_full)."""
    backlogs = [
        _int(q.get("backlog")) for q in sample.get("listen") or [] if isinstance(q, Mapping)
    ]
    known = [b for b in backlogs if b is not None]
    return sum(known) if known else None


def _state_rows(sample: Mapping[str, Any], sysctls: Mapping[str, Any]) -> list[Row]:
    states = _get(sample, "tcp", "states") or {}
    tw = _int(states.get("TIME_WAIT"))
    if tw is None:  # sock_diag not available: sockstat knows TIME_WAIT (both families)
        tw = _int(_get(sample, "sockstat", "tw"))
    v4 = _get(sample, "tcp", "states_v4") or {}
    v6 = _get(sample, "tcp", "states_v6") or {}
    mapped = _int(_get(sample, "tcp", "tw_v4mapped"))
    tw_detail = ""
    if v4 or v6:
        tw_detail = f"v4 {_fmt(v4.get('TIME_WAIT'))} · v6 {_fmt(v6.get('TIME_WAIT'))}"
    if mapped is not None:
        tw_detail += f"{' · ' if tw_detail else ''}v4-mapped {_fmt(mapped)}"
    fw1, fw2 = _int(states.get("FIN_WAIT1")), _int(states.get("FIN_WAIT2"))
    syn = [_int(states.get(s)) for s in ("SYN_RECV", "NEW_SYN_RECV")]
    return [
        Row("TIME_WAIT", tw, _int(sysctls.get("net.ipv4.tcp_max_tw_buckets")), tw_detail),
        Row("ESTABLISHED", _int(states.get("ESTABLISHED")), detail="no table limit"),
        Row(
            "SYN_RECV",
            None if syn[0] is None else sum(s or 0 for s in syn),
            _syn_queue_limit(sample),
            "SYN queues: each listener's backlog (syncookies beyond)",
        ),
        Row(
            "FIN_WAIT1/2",
            None if fw1 is None and fw2 is None else (fw1 or 0) + (fw2 or 0),
            detail=f"FIN_WAIT1 {_fmt(fw1)} · FIN_WAIT2 {_fmt(fw2)}",
        ),
        Row("CLOSE_WAIT", _int(states.get("CLOSE_WAIT")), detail="each holds a descriptor"),
        Row(
            "orphans",
            _int(_get(sample, "sockstat", "orphan")),
            _int(sysctls.get("net.ipv4.tcp_max_orphans")),
            "global",
        ),
    ]


def _conntrack_rows(sample: Mapping[str, Any]) -> list[Row]:
    ct = sample.get("conntrack") or {}
    if not ct.get("loaded"):
        return [Row("conntrack", None, detail="nf_conntrack not loaded: nothing tracked")]
    detail = "tracking" if ct.get("active") else "loaded, no entries: nothing tracked yet"
    delta = ct.get("stat_delta") or {}
    return [
        Row("conntrack", _int(ct.get("count")), _int(ct.get("max")), detail),
        Row(
            "conntrack drops/s",
            _per_second(sample, delta.get("drop")),
            detail=f"early_drop/s {_fmt(_per_second(sample, delta.get('early_drop')))}"
            f" · insert_failed/s {_fmt(_per_second(sample, delta.get('insert_failed')))}",
            rate=True,
        ),
    ]


def _counter_rows(sample: Mapping[str, Any]) -> list[Row]:
    ext = _get(sample, "counters_delta", "TcpExt") or {}
    return [
        Row(
            "listen overflows/s",
            _per_second(sample, ext.get("ListenOverflows")),
            rate=True,
            detail="accept queue full",
        ),
        Row(
            "listen drops/s",
            _per_second(sample, ext.get("ListenDrops")),
            rate=True,
            detail="TcpExtListenDrops",
        ),
        Row(
            "TIME_WAIT overflows/s",
            _per_second(sample, ext.get("TCPTimeWaitOverflow")),
            rate=True,
            detail="tcp_max_tw_buckets reached",
        ),
    ]


def _queue_rows(sample: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    listens = [q for q in sample.get("listen") or [] if isinstance(q, Mapping)]
    listens.sort(key=lambda q: -((q.get("queue") or 0) / max(q.get("backlog") or 1, 1)))
    for q in listens[:TOP_LISTENERS]:
        rows.append(
            Row(f"accept queue {q.get('local')}", _int(q.get("queue")), _int(q.get("backlog")))
        )
    if len(listens) > TOP_LISTENERS:
        rows.append(Row(f"+{len(listens) - TOP_LISTENERS} listeners", None))
    for d in (sample.get("destinations") or [])[:TOP_DESTINATIONS]:
        states = d.get("states") or {}
        detail = " · ".join(
            f"{k} {_fmt(v)}" for k, v in sorted(states.items(), key=lambda kv: -kv[1])
        )
        rows.append(
            Row(
                f"ports to {d.get('remote')}",
                _int(d.get("sockets")),
                _int(d.get("port_range")),
                detail,
            )
        )
    return rows


def _fd_rows(sample: Mapping[str, Any]) -> list[Row]:
    proc = _get(sample, "fds", "process") or {}
    system = _get(sample, "fds", "system") or {}
    rows = []
    if proc:
        rows.append(
            Row(
                f"fds pid {proc.get('pid')}",
                _int(proc.get("open")),
                _int(proc.get("soft")),
                f"hard {_fmt(_int(proc.get('hard')))}",
            )
        )
    rows.append(
        Row("fds system", _int(system.get("allocated")), _int(system.get("max")), "fs.file-max")
    )
    soft = _get(sample, "softnet_delta", "dropped")
    rows.append(
        Row(
            "backlog drops/s",
            _per_second(sample, soft),
            rate=True,
            detail="netdev_max_backlog",
        )
    )
    return rows


def watch_rows(sample: Mapping[str, Any], sysctls: Mapping[str, Any]) -> list[Row]:
    """Every row of the view, in display order."""
    return [
        *_state_rows(sample, sysctls),
        *_conntrack_rows(sample),
        *_counter_rows(sample),
        *_queue_rows(sample),
        *_fd_rows(sample),
    ]


def closest_to_full(rows: list[Row]) -> Row | None:
    """The bounded row with the largest share (``None`` if no row has a limit)."""
    bounded = [r for r in rows if r.share is not None]
    return max(bounded, key=lambda r: r.share or 0.0) if bounded else None


def _share_text(row: Row) -> Text:
    share = row.share
    if share is None:
        return Text("-", style="dim")
    style = "red bold" if share >= 0.9 else "yellow" if share >= 0.5 else "green"
    return Text(f"{share:.1%}", style=style)


def _title(sample: Mapping[str, Any]) -> Text:
    t = sample.get("t")
    interval = sample.get("interval")
    title = Text.assemble(
        ("tcpchurn watch", "bold"),
        f"  {sample.get('where', '?')}",
        f"  t={t:.1f}s" if isinstance(t, int | float) else "",
        f"  every {interval:.2f}s" if isinstance(interval, int | float) else "",
        f"  source {_get(sample, 'tcp', 'source') or '-'}",
    )
    states_t = sample.get("states_t")  # set by watcher.carry_forward
    if isinstance(states_t, int | float) and isinstance(t, int | float) and states_t != t:
        title.append(f"  (states from t={states_t:.1f}s)", style="dim")
    return title


class WatchTable:
    """The rows as a table sized to the terminal: only the detail column is cut short
    on a narrow one (rich would otherwise squeeze the numbers too)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.top = closest_to_full(rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = self.rows
        cells = [
            [r.name for r in rows],
            [_fmt(r.used) for r in rows],
            ["" if r.rate else _fmt(r.limit) for r in rows],
            [str(_share_text(r)) for r in rows],
        ]
        headers = ("table", "used", "limit", "share")
        widths = [max([len(h), *map(len, c)]) for h, c in zip(headers, cells, strict=True)]
        # marker column 1, then each column + 1 space of padding each side + 1 separator
        fixed = 1 + sum(w + 3 for w in widths) + 2
        detail_width = max(8, options.max_width - fixed - 1)
        table = Table(show_edge=False, pad_edge=False, expand=False)
        table.add_column("", width=1, no_wrap=True)
        for header, width in zip(headers, widths, strict=True):
            justify: Literal["left", "right"] = "left" if header == "table" else "right"
            table.add_column(header, justify=justify, no_wrap=True, width=width)
        table.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=detail_width)
        for row in rows:
            is_top = row is self.top
            style = ""
            if is_top:
                style = "bold red" if row.alarming else "bold yellow"
            elif row.alarming:
                style = "red"
            table.add_row(
                Text(MARKER if is_top else "", style=style),
                Text(row.name, style=style),
                Text(_fmt(row.used), style="red bold" if row.rate and row.used else ""),
                "" if row.rate else _fmt(row.limit),
                _share_text(row),
                Text(row.detail, style="dim"),
            )
        yield table


def render_watch(sample: Mapping[str, Any], sysctls: Mapping[str, Any]) -> RenderableType:
    """The whole view for one sample: a title line, the table of rows, the verdict."""
    rows = watch_rows(sample, sysctls)
    top = closest_to_full(rows)
    footer = Text("")
    if top is not None:
        footer = Text.assemble(
            (f"{MARKER} closest to full: ", "bold"),
            (f"{top.name} at {top.share:.1%} of {_fmt(top.limit)}", "bold"),
        )
    return Group(_title(sample), WatchTable(rows), footer)
