"""timeline.jsonl and summary.json writers: flushed per line, atomic, NaN-free."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tcpchurn.report.files import (
    TimelineWriter,
    read_summary,
    read_timeline,
    write_summary,
)


def test_each_line_is_on_disk_before_the_next_is_written(tmp_path: Path) -> None:
    with TimelineWriter(tmp_path / "run") as w:
        w.write({"t": 1.0, "load": {"ok": 3}})
        # Read by another file object while the writer is still open.
        assert (tmp_path / "run" / "timeline.jsonl").read_text() == (
            '{"t": 1.0, "load": {"ok": 3}}\n'
        )
        w.write({"t": 2.0, "load": {"ok": 4}})
        assert w.lines == 2
    assert [line["t"] for line in read_timeline(tmp_path / "run")] == [1.0, 2.0]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "timeline.jsonl").write_text('{"t": 1.0}\n{"t": 2')
    assert list(read_timeline(tmp_path)) == [{"t": 1.0}]


def test_nan_becomes_null(tmp_path: Path) -> None:
    with TimelineWriter(tmp_path) as w:
        w.write({"p99": math.nan, "xs": [math.inf, 1.0]})
    raw = (tmp_path / "timeline.jsonl").read_text()
    assert json.loads(raw) == {"p99": None, "xs": [None, 1.0]}


def test_summary_replaces_atomically(tmp_path: Path) -> None:
    write_summary(tmp_path, {"a": 1})
    path = write_summary(tmp_path, {"a": 2, "b": [1, 2]})
    assert read_summary(tmp_path) == {"a": 2, "b": [1, 2]}
    assert path == tmp_path / "summary.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    w = TimelineWriter(tmp_path)
    w.close()
    w.close()
    try:
        w.write({"t": 1.0})
    except ValueError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("write after close did not fail")
