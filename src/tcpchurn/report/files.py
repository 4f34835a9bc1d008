"""The two files every run leaves behind: ``timeline.jsonl`` and ``summary.json``.

Layout of a run directory (docs/schema.md §3 and §4)::

    <out>/timeline.jsonl   one JSON object per interval, flushed as soon as it is written
    <out>/summary.json     written once at the end, atomically (write + rename)

"Nothing lost" (DESIGN.md quality bars): a run killed with SIGKILL still leaves every
complete interval in the timeline, because each line is flushed (and fsync'ed at most
once a second, which costs ~0.1 ms on ext4) before the next interval starts.  The summary
is written to a temporary name and renamed, so a reader never sees half a summary.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

TIMELINE_NAME = "timeline.jsonl"
SUMMARY_NAME = "summary.json"


class TimelineWriter:
    """Appends one timeline line per interval to ``<run_dir>/timeline.jsonl``.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with TimelineWriter(d) as w:
    ...     w.write({"t": 1.0})
    >>> (d / "timeline.jsonl").read_text()
    '{"t": 1.0}\\n'
    """

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / TIMELINE_NAME
        self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")
        self.lines = 0

    def write(self, line: Mapping[str, Any]) -> None:
        """Write one interval as a single JSON line and push it to the kernel at once."""
        if self._file is None:
            raise ValueError(f"{self.path} is already closed")
        self._file.write(dumps_line(line) + "\n")
        self._file.flush()
        # fsync so that a power cut or a killed VM still keeps the interval; one per
        # interval (>= 0.1 s) is cheap next to the kernel sample itself.
        os.fsync(self._file.fileno())
        self.lines += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TimelineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _finite(value: Any) -> Any:
    """``value`` with every NaN/infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        # A producer handed us NaN (e.g. a percentile of an empty histogram): schema.md
        # says a missing value is null, so write null rather than lose the interval.
        return json.dumps(_finite(value), indent=indent, allow_nan=False)


def dumps_line(line: Mapping[str, Any]) -> str:
    """One timeline line as compact JSON (no newline); NaN becomes ``null``."""
    return _dumps(line)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SUMMARY_NAME
    tmp = run_dir / (SUMMARY_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_dumps(summary, indent=2))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_timeline(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield the timeline lines of a run directory; a torn last line is skipped.

    A run killed in the middle of ``write`` may leave a partial last line: every complete
    line before it is still good.
    """
    with open(run_dir / TIMELINE_NAME, encoding="utf-8") as f:
        for raw in f:
            if not raw.endswith("\n"):
                return
            yield json.loads(raw)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The parsed ``summary.json`` of a run directory."""
    with open(run_dir / SUMMARY_NAME, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data
