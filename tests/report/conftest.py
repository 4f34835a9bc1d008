"""Report tests: each recorded run is rendered once per session and shared (2-3 s each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.report.html import write_report

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``rendered(name)``: the HTML report of ``tests/fixtures/runs/<name>`` (read-only)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"report-{name}") / f"{name}.html"
            cache[name] = write_report(RUNS / name, out)
        return cache[name]

    return get
