"""The HTML report of recorded runs: every plot, the summary's numbers, the findings."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.report.html import write_report
from tcpchurn.report.plots import STATIC_SPECS
from tests.report.make_fixture import synthetic, write_run

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
PLOT_IDS = [s.id for s in STATIC_SPECS] + ["plot-errors"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects what the tests look at: figures, images, data cells, findings, links."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.images: dict[str, dict[str, str]] = {}
        self.cells: dict[str, Any] = {}
        self.findings: list[dict[str, str]] = []
        self.urls: list[str] = []
        self._figure = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self._figure = a["id"]
            self.figures.append(a["id"])
        if tag == "img":
            self.images[self._figure] = a
        if "data-key" in a:
            self.cells[a["data-key"]] = json.loads(a["data-value"])
        if tag == "section" and "finding" in a.get("class", ""):
            self.findings.append(a)
        for attr in ("src", "href"):
            if attr in a:
                self.urls.append(a[attr])


def _page(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    return p


@pytest.fixture
def seed_report(rendered: Callable[[str], Path]) -> Path:
    return rendered("seed-2009")


def test_every_plot_is_embedded_with_alt_text_and_written_beside(seed_report: Path) -> None:
    page = _page(seed_report)
    assert sorted(page.figures) == sorted(PLOT_IDS)
    for pid in PLOT_IDS:
        img = page.images[pid]
        assert len(img["alt"]) > 20
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png.startswith(PNG_MAGIC)
        beside = seed_report.with_name(seed_report.stem + "-plots") / f"{pid}.png"
        assert beside.read_bytes() == png


def test_the_page_is_self_contained(seed_report: Path) -> None:
    page = _page(seed_report)
    # offline: only embedded images and in-page anchors, no scripts, no fonts, no CDN
    assert all(u.startswith(("data:", "#")) for u in page.urls), page.urls
    text = seed_report.read_text()
    assert "<script" not in text and "@import" not in text and "url(" not in text


ALL_RUNS = sorted(p.name for p in RUNS.iterdir() if (p / "summary.json").exists())


@pytest.mark.parametrize("run", ALL_RUNS)
def test_numbers_are_the_summarys(rendered: Callable[[str], Path], run: str) -> None:
    summary = json.loads((RUNS / run / "summary.json").read_text())
    report = rendered(run)
    page = _page(report)
    assert sorted(page.figures) == sorted(PLOT_IDS)
    cells = page.cells
    for key in ("target_rate", "achieved_rate", "duration_s"):
        assert cells[key] == summary[key]
    for key, value in summary["connections"].items():
        assert cells[f"connections.{key}"] == value
    for name, n in summary["errors"].items():
        assert cells[f"errors.{name}"] == n
        assert cells[f"first_error_s.{name}"] == summary["first_error_s"][name]
    for kind, pcts in summary["latency_ms"].items():
        for p, v in pcts.items():
            assert cells[f"latency_ms.{kind}.{p}"] == v
    for i, h in enumerate(summary["headroom"]):
        assert cells[f"headroom.{i}.peak"] == h["peak"]
    assert cells["environment.kernel"] == summary["environment"]["kernel"]
    for name, value in summary["environment"]["sysctls"].items():
        assert cells[f"environment.sysctls.{name}"] == value
    assert [(f["data-limit"], json.loads(f["data-onset"])) for f in page.findings] == [
        (f["limit"], f["onset_s"]) for f in summary["findings"]]


def test_findings_shown_with_onset_evidence_and_fix(seed_report: Path) -> None:
    summary = json.loads((RUNS / "seed-2009" / "summary.json").read_text())
    finding = summary["findings"][0]
    page = _page(seed_report)
    assert [(f["data-limit"], json.loads(f["data-onset"])) for f in page.findings] == [
        (finding["limit"], finding["onset_s"])]
    for k, v in finding["evidence"].items():
        assert page.cells[f"findings.0.evidence.{k}"] == v
    text = seed_report.read_text()
    assert "onset 16.4 s" in text
    assert finding["fix"][0] in text and "tcp_tw_recycle" in text
    assert 'id="verdict"' in text and "conntrack table full" in text
    assert '<a href="#plot-conntrack">see the plot</a>' in text


def test_healthy_run_says_so_and_draws_what_is_missing_as_missing(
        rendered: Callable[[str], Path]) -> None:
    out = rendered("healthy")
    text = out.read_text()
    assert "The run held its rate" in text
    assert "None: every table stayed below its limit." in text
    assert sorted(_page(out).figures) == sorted(PLOT_IDS)


def test_saturated_generator_and_warnings_are_said(tmp_path: Path) -> None:
    run = shutil.copytree(RUNS / "healthy", tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary.update(generator_saturated=True, warnings=["rate x timeout > RLIMIT_NOFILE"])
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text()
    assert 'class="verdict warn"' in text and "generator_saturated" in text
    assert f"{summary['connections']['late']} connections started late" in text
    assert "rate x timeout &gt; RLIMIT_NOFILE" in text


def test_server_sysctls_are_listed_and_drawn(tmp_path: Path) -> None:
    run = shutil.copytree(RUNS / "lab-tw-buckets", tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["environment"]["server_sysctls"] = {"net.ipv4.tcp_max_tw_buckets": 1000}
    (run / "summary.json").write_text(json.dumps(summary))
    out = write_report(run)
    page = _page(out)
    assert page.cells["environment.server_sysctls.net.ipv4.tcp_max_tw_buckets"] == 1000
    assert 'id="server-sysctl-table"' in out.read_text()


def test_default_output_is_in_the_run_dir(tmp_path: Path) -> None:
    run = shutil.copytree(RUNS / "healthy", tmp_path / "run")
    out = write_report(run)
    assert out == run / "report.html" and (run / "report-plots" / "plot-rate.png").exists()


def test_ten_minute_run_is_small_and_fast(tmp_path: Path) -> None:
    # 10 minutes at 10 samples/s: 6,000 points per series, down-sampled for the plots
    run = write_run(tmp_path / "long", *synthetic(rate=2000, duration=600, interval=0.1))
    out = write_report(run)
    size = out.stat().st_size
    assert size < 5 * 1024 * 1024, f"{size:,} bytes"
    page = _page(out)
    assert sorted(page.figures) == sorted(PLOT_IDS)
    timeline_lines = sum(1 for _ in open(run / "timeline.jsonl"))
    assert timeline_lines == 6000  # the data is never truncated


def test_a_run_with_nothing_in_it_still_renders(tmp_path: Path) -> None:
    # interrupted at once: an empty timeline and a summary of nulls
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"connections": None, "latency_ms": {"connect": None}, "findings": [{"limit": "x"}],
         "environment": {"sysctls": None}, "headroom": [{}], "interrupted": True}))
    (run / "timeline.jsonl").write_text("")
    page = _page(write_report(run))
    assert sorted(page.figures) == sorted(PLOT_IDS)
    assert page.cells["connections.attempted"] is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpchurn", *args], capture_output=True,
                          text=True, timeout=120)


def _corrupt_line(run: Path) -> None:
    lines = (run / "timeline.jsonl").read_text().splitlines()
    lines[6] = lines[6][: len(lines[6]) // 2]
    (run / "timeline.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda run: shutil.rmtree(run), "no such directory"),
    (lambda run: (run / "summary.json").unlink(), "no summary.json in it"),
    (lambda run: (run / "summary.json").write_text("{not json"), "summary.json is not JSON"),
    (lambda run: (run / "summary.json").write_text("[1, 2]"), "not a JSON object"),
    (_corrupt_line, "timeline.jsonl line 7 is not JSON"),
    (lambda run: (run / "timeline.jsonl").write_text("[1]\n"), "line 1 is not a JSON object"),
    (lambda run: (run / "summary.json").write_text('{"findings": [{}, 5]}'),
     "'findings' item 1 is int, not an object"),
    (lambda run: (run / "summary.json").write_text('{"latency_ms": {"connect": [1]}}'),
     "'latency_ms'.connect is list, not an object"),
    (lambda run: (run / "summary.json").write_text('{"findings": [{"fix": "sysctl -w"}]}'),
     "'findings' item 0 'fix' is str, not a list"),
])
def test_bad_run_dir_is_one_line_and_exit_2(tmp_path: Path, breakage: Any,
                                            message: str) -> None:
    run = shutil.copytree(RUNS / "healthy", tmp_path / "run")
    breakage(run)
    res = _cli("report", str(run))
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert message in res.stderr and str(run) in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_report_writes_where_asked(tmp_path: Path) -> None:
    res = _cli("report", str(RUNS / "healthy"), "-o", str(tmp_path / "x" / "r.html"))
    assert res.returncode == 0, res.stderr
    assert re.search(r"report: .*r\.html", res.stdout)
    assert (tmp_path / "x" / "r.html").stat().st_size > 10_000
