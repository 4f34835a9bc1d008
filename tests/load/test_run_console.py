"""The run dashboard and final summary, rendered from recorded runs (schema §3/§4)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from tcpchurn.report.console import (
    DashboardState,
    TableRow,
    kernel_tables,
    render_dashboard,
    render_summary,
)
from tcpchurn.report.files import read_summary, read_timeline

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def _text(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def _state(run: str) -> DashboardState:
    summary = read_summary(RUNS / run)
    state = DashboardState(
        target=summary["target"],
        duration=summary["duration_s"],
        client_sysctls=summary["environment"]["sysctls"],
        server_sysctls=summary["environment"]["sysctls"],
    )
    for line in read_timeline(RUNS / run):
        state.add(line)
    return state


def test_state_totals_equal_the_sum_of_the_timeline() -> None:
    lines = list(read_timeline(RUNS / "seed-2009"))
    state = _state("seed-2009")
    assert state.attempted == sum(line["load"]["attempted"] for line in lines)
    assert state.failed == sum(line["load"]["failed"] for line in lines)
    first = next(line["t"] for line in lines if line["load"]["errors"].get("ETIMEDOUT"))
    assert state.first_error_s == {"ETIMEDOUT": first}


def test_dashboard_shows_rates_errors_and_both_sides() -> None:
    state = _state("seed-2009")
    last = state.last
    assert last is not None
    text = _text(render_dashboard(state))
    assert f"{last['load']['achieved_rate']:,.1f}/s achieved" in text
    assert f"{last['load']['target_rate']:,.1f}/s target" in text
    assert f"{state.duration - last['t']:.1f} s left" in text
    assert "ETIMEDOUT" in text and f"{state.errors['ETIMEDOUT']:,}" in text
    # The server's conntrack row: count of max, with its share.
    ct = last["server"]["conntrack"]
    share = ct["count"] / ct["max"]
    row = next(r for r in text.splitlines() if r.startswith(("│ conntrack", "┃ conntrack")))
    assert f"{ct['count']:,}" in row and f"{share:.1%}" in row
    assert last["server"]["where"] in text
    for line in text.splitlines():
        assert len(line) <= 100


def test_dashboard_without_server_has_only_client_columns() -> None:
    state = _state("healthy")
    assert state.last is not None and state.last["server"] is None
    text = _text(render_dashboard(state))
    header = next(r for r in text.splitlines() if "table" in r and "client" in r)
    assert "server" not in header and header.count("share") == 1


def test_kernel_tables_uses_sysctl_limits_and_unknown_is_question_mark() -> None:
    line = next(iter(read_timeline(RUNS / "healthy")))
    rows = {r.name: r for r in kernel_tables(line["client"], {})}
    assert rows["TIME_WAIT"].limit is None and rows["TIME_WAIT"].share is None
    rows = {
        r.name: r
        for r in kernel_tables(line["client"], {"net.ipv4.tcp_max_tw_buckets": 1000})
    }
    assert rows["TIME_WAIT"] == TableRow("TIME_WAIT", line["client"]["sockstat"]["tw"], 1000)
    assert "?" in _text(render_dashboard(DashboardState("t", 1.0, last=line)))


def test_summary_names_findings_and_fixes() -> None:
    summary = read_summary(RUNS / "seed-2009")
    text = _text(render_summary(summary))
    assert f"{summary['achieved_rate']:,.1f}/s achieved of {summary['target_rate']:,.1f}/s" in text
    assert f"{summary['connections']['failed']:,} failed" in text
    assert f"{summary['first_error_s']['ETIMEDOUT']:.3f} s" in text
    for finding in summary["findings"]:
        assert finding["limit"] in text
        flat = " ".join(text.split())  # long fix lines wrap at the console's width
        for fix in finding["fix"]:
            assert " ".join(fix.split()) in flat
    assert "nothing hit" not in text


def test_summary_without_findings_shows_headroom() -> None:
    summary = json.loads((RUNS / "healthy" / "summary.json").read_text())
    summary["findings"] = []
    summary["headroom"] = [
        {"limit": "tw_buckets", "side": "client", "peak": 13107, "capacity": 131072,
         "share": 0.1, "rate_to_fill": 2184.5},
        {"limit": "conntrack_full", "side": "client", "peak": 2621, "capacity": 262144,
         "share": 0.01, "rate_to_fill": 2184.5},
    ]
    text = _text(render_summary(summary))
    assert "nothing hit; headroom: tw_buckets (client) 10.0%, conntrack_full (client) 1.0%" in text


def test_summary_marks_a_saturated_generator() -> None:
    summary = read_summary(RUNS / "healthy")
    summary["generator_saturated"] = True
    assert "generator_saturated" in _text(render_summary(summary))
    summary["generator_saturated"] = False
    assert "generator_saturated" not in _text(render_summary(summary))


def test_summary_says_when_a_worker_started_another_s_connections() -> None:
    summary = read_summary(RUNS / "healthy")
    assert "started by another worker" not in _text(render_summary(summary))  # none
    summary["connections"]["taken_over"] = 1234
    assert "1,234 started by another worker: theirs was held up over 0.5 ms" in _text(
        render_summary(summary))


def test_live_dashboard_redraws_every_interval() -> None:
    from tcpchurn.report.console import Dashboard

    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=True)
    lines = list(read_timeline(RUNS / "healthy"))
    dash = Dashboard(DashboardState("http://127.0.0.1:8080/", float(len(lines))), console)
    for line in lines:
        dash.update(line)
    dash.close()
    out = console.file.getvalue()  # type: ignore[attr-defined]
    # One frame per interval, each with its own time left, ending at 0.
    for i in range(1, len(lines) + 1):
        assert f"{len(lines) - i:.1f} s left" in out
    assert dash.state.attempted == sum(line["load"]["attempted"] for line in lines)


def test_rising_limit_counters_are_named_per_side() -> None:
    state = _state("seed-2009")
    assert state.last is not None
    drop = state.last["server"]["conntrack"]["stat_delta"]["drop"]
    retrans = state.last["client"]["counters_delta"]["TcpExt"]["TCPSynRetrans"]
    assert drop > 0 and retrans > 0
    text = _text(render_dashboard(state))
    assert f"server this interval: conntrack drop +{drop:,}" in text
    assert f"client this interval: TCPSynRetrans +{retrans:,}" in text
    healthy = _state("healthy")
    assert "this interval:" not in _text(render_dashboard(healthy))
