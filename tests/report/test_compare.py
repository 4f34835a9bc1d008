"""compare: before/after side by side, as text and as one HTML page."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tcpchurn.errors import BadValue
from tcpchurn.report.compare import Row, labels, load, rows, text_table, write_compare
from tests.report.test_html import PLOT_IDS, Page

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def _row(all_rows: list[Row], section: str, label: str) -> tuple[str, ...]:
    return next(r.values for r in all_rows if r.section == section and r.label == label)


def test_rows_put_each_runs_numbers_side_by_side() -> None:
    runs = load([RUNS / "healthy", RUNS / "seed-2009"])
    rs = rows(runs)
    a, b = (r.run.summary for r in runs)
    assert _row(rs, "connections", "attempted") == (f"{a['connections']['attempted']:,}",
                                                    f"{b['connections']['attempted']:,}")
    # an error only one run had shows as 0 in the other
    assert _row(rs, "errors", "ETIMEDOUT") == ("0", f"{b['errors']['ETIMEDOUT']:,}")
    assert _row(rs, "findings", "limits") == ("none", "conntrack_full (server) @ 16.4 s")
    assert _row(rs, "peak (server)", "conntrack entries") == ("–", "16,384 / 16,384 (100%)")
    assert _row(rs, "latency (ms)", "connect p99") == ("0.19", "1,001.9")


def test_lab_run_before_and_after_the_fix() -> None:
    # recorded with `tcpchurn lab run ephemeral-ports --fix`
    runs = load([RUNS / "lab-ephemeral-ports-before", RUNS / "lab-ephemeral-ports-after"])
    before, after = (r.run.summary for r in runs)
    rs = rows(runs)
    assert _row(rs, "findings", "limits")[0].startswith("ephemeral_ports (client) @ ")
    assert _row(rs, "findings", "limits")[1] == "none"
    assert _row(rs, "errors", "EADDRNOTAVAIL") == (
        f"{before['errors']['EADDRNOTAVAIL']:,}", "0")
    assert _row(rs, "connections", "failed") == (f"{before['connections']['failed']:,}", "0")
    # the busiest destination used its whole port range before the fix, not after
    ports = _row(rs, "peak (client)", "busiest destination sockets")
    assert ports[0].endswith("(100%)") and not ports[1].endswith("(100%)")
    assert after["connections"]["failed"] == 0


def test_text_table_renders() -> None:
    runs = load([RUNS / "seed-2009", RUNS / "healthy"])
    out = io.StringIO()
    Console(file=out, width=160).print(text_table(runs))
    text = out.getvalue()
    assert "seed-2009" in text and "healthy" in text
    assert "ETIMEDOUT" in text and "conntrack_full" in text


def test_same_directory_names_get_numbered(tmp_path: Path) -> None:
    a = shutil.copytree(RUNS / "healthy", tmp_path / "a" / "run")
    b = shutil.copytree(RUNS / "seed-2009", tmp_path / "b" / "run")
    assert labels(load([a, b])) == ["1:run", "2:run"]


def test_html_overlays_every_plot(tmp_path: Path) -> None:
    out = write_compare(load([RUNS / "healthy", RUNS / "seed-2009"]), tmp_path / "c.html")
    page = Page()
    page.feed(out.read_text())
    assert sorted(page.figures) == sorted(PLOT_IDS)
    assert all(u.startswith(("data:", "#")) for u in page.urls)
    assert 'id="compare-table"' in out.read_text()
    assert (tmp_path / "c-plots" / "plot-conntrack.png").exists()


def test_one_run_is_not_a_comparison() -> None:
    with pytest.raises(BadValue, match="two run directories"):
        load([RUNS / "healthy"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpchurn", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "160"})


def test_cli_compare(tmp_path: Path) -> None:
    res = _cli("compare", str(RUNS / "healthy"), str(RUNS / "seed-2009"), "-o",
               str(tmp_path / "c.html"))
    assert res.returncode == 0, res.stderr
    assert "conntrack_full" in res.stdout and "compare:" in res.stdout
    assert (tmp_path / "c.html").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["healthy"], "need two"),
    (["healthy", "missing"], "no such directory"),
])
def test_cli_compare_bad_input(args: list[str], message: str) -> None:
    res = _cli("compare", *(str(RUNS / a) for a in args))
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
