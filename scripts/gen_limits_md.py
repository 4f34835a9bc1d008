"""Regenerate docs/limits.md from the rules table: ``python scripts/gen_limits_md.py``."""

from __future__ import annotations

from pathlib import Path

from tcpchurn.diagnose.docs import render_limits_md

if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "docs" / "limits.md"
    path.write_text(render_limits_md(), encoding="utf-8")
    print(f"wrote {path}")
