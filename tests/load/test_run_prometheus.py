"""`tcpchurn run --prometheus PORT`: scraped during a real run, parsed with
prometheus-client's own parser, and consistent with what the run wrote."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.load.nginx_helper import free_port
from tests.load.runhelp import ROOT, tcpchurn_argv


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _values(text: str) -> dict[str, float]:
    """Sample name (+ labels) -> value, through the client library's parser."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_scrapes_during_a_run_match_the_timeline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = free_port()
    argv = tcpchurn_argv("run", "--rate", "300", "--duration", "4", "--workers", "1",
                         "--out", str(out), "--quiet", "--prometheus", str(port))
    proc = subprocess.Popen(argv, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scrapes: list[tuple[int, dict[str, float], int]] = []
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            before = _lines(out / "timeline.jsonl")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=2) as r:
                    text = r.read().decode()
            except OSError:  # not serving yet, or already stopped
                time.sleep(0.05)
                continue
            after = _lines(out / "timeline.jsonl")
            if before == after and before > 0:
                scrapes.append((before, _values(text), after))
            time.sleep(0.1)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    timeline: list[dict[str, Any]] = [
        json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert scrapes, "no scrape landed between two intervals"

    def cumulative(key: str, k: int) -> int:
        return sum(int(line["load"][key]) for line in timeline[:k])

    for n, values, _ in scrapes:
        attempted = values["tcpchurn_connections_attempted_total"]
        # The exporter is updated just after a line is written: it shows n lines, or
        # n - 1 when the scrape fell between the write and the update.
        k = next(k for k in (n, n - 1) if cumulative("attempted", k) == attempted)
        assert values["tcpchurn_connections_ok_total"] == cumulative("ok", k)
        assert values.get("tcpchurn_connections_late_total", 0) == cumulative("late", k)
        if k:
            sample = timeline[k - 1]
            assert values["tcpchurn_target_connection_rate"] == sample["load"]["target_rate"]
            ct_max = sample["client"]["conntrack"]["max"]
            assert values["tcpchurn_conntrack_max{side=client}"] == ct_max
            count = values["tcpchurn_connection_latency_seconds_count{phase=connect}"]
            assert count == sum(line["load"]["latency_ms"]["connect"]["count"]
                                for line in timeline[:k])
    # ... and the last scrape never shows more than the summary counts.
    last = scrapes[-1][1]
    assert last["tcpchurn_connections_attempted_total"] <= summary["connections"]["attempted"]
    assert summary["connections"]["attempted"] == cumulative("attempted", len(timeline)) == 1200
