"""summary.json (docs/schema.md §4): the load totals, the environment and the verdict."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcpchurn import __version__

# The share of skipped connections the diagnosis also calls saturation
# (diagnose/connects.py); one skip at a schedule's edge is not a saturated generator.
SKIPPED_SHARE = 0.005


def diagnose(
    timeline: list[dict[str, Any]], summary: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """Findings and headroom from tcpchurn.diagnose.verdict, or ([], []) without it."""
    try:
        from tcpchurn.diagnose.verdict import diagnose_run
    except ImportError:
        return [], []
    verdict = diagnose_run(timeline, summary)
    return [f.to_json() for f in verdict.findings], [h.to_json() for h in verdict.headroom]


def apply_verdict(
    summary: dict[str, Any], findings: list[Any], headroom: list[Any]
) -> dict[str, Any]:
    """Put the diagnosis into ``summary``; a ``generator_saturated`` finding sets the flag."""
    summary["findings"], summary["headroom"] = findings, headroom
    if any(f.get("limit") == "generator_saturated" for f in findings):
        summary["generator_saturated"] = True
    return summary


def write_html(out_dir: Path) -> Path | None:
    """``--html``: the report of :mod:`tcpchurn.report.html`, or ``None`` without it."""
    try:
        from tcpchurn.report.html import write_report
    except ImportError:
        return None
    return write_report(out_dir)


def build_summary(
    *,
    totals: Mapping[str, Any],
    started: float,
    duration_s: float,
    interrupted: bool,
    target: str,
    environment: Mapping[str, Any],
    config: Mapping[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """summary.json (schema §4) before the diagnosis fills ``findings``/``headroom``.

    ``totals`` is ``RunTotals.to_json()``.  ``generator_saturated`` (an added key) is true
    when more than :data:`SKIPPED_SHARE` of the due connections were skipped: the
    schedule was not kept by tcpchurn itself (the counts are always in ``connections``).
    :func:`apply_verdict` also sets it when the diagnosis finds ``generator_saturated`` (rate
    behind, or schedule lag sustained); a few ``late`` starts (> 1 ms) on a busy machine
    are only counted.
    """
    conns = dict(totals["connections"])
    summary: dict[str, Any] = {
        "tcpchurn_version": __version__,
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
        "duration_s": round(duration_s, 3),
        "interrupted": interrupted,
        "target": target,
    }
    summary.update(totals)
    summary["connections"] = conns
    summary.update(
        {
            "generator_saturated": conns.get("skipped", 0)
            > SKIPPED_SHARE * (conns["attempted"] + conns.get("skipped", 0)),
            "environment": dict(environment),
            "findings": [],
            "headroom": [],
            "warnings": list(warnings),
            "config": dict(config),
        }
    )
    return summary
