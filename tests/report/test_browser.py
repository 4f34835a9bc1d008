"""The report in a real browser: headless Chromium renders it without a console error.

The screenshot is kept under tests/artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def screenshot(page: Path, png: Path, profile: Path, size: str = "1280,4000") -> str:
    """Render ``page`` headless into ``png``; return Chromium's log (stderr)."""
    assert CHROMIUM is not None
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}",
         # any attempt to reach the network fails: the report must not need it
         "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=0",
         f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stderr


def console_errors(log: str) -> list[str]:
    """Lines where the page itself complained (console messages, uncaught exceptions)."""
    return [ln for ln in log.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_console_error_detection_works(tmp_path: Path) -> None:
    # calibrates the check below: a page with a broken script IS caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefined_fn()</script></body></html>")
    log = screenshot(bad, tmp_path / "bad.png", tmp_path / "profile", "400,300")
    assert any("undefined_fn" in ln for ln in console_errors(log))


@pytest.mark.parametrize("run", ["seed-2009", "healthy"])
def test_report_renders_in_chromium_without_errors(
        tmp_path: Path, rendered: Callable[[str], Path], run: str) -> None:
    report = rendered(run)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{run}.png"
    shot.unlink(missing_ok=True)
    log = screenshot(report, shot, tmp_path / "profile")
    assert console_errors(log) == []
    assert png_size(shot) == (1280, 4000)
    # a blank or failed page compresses to a few kB; this one has text and plots
    assert shot.stat().st_size > 100_000
