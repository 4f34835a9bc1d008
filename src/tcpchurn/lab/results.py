"""What a lab pass produced: the run's summary and findings, and the lab's own figures.

:class:`PassResult` is one pass (before or after the fix); :class:`LabResult` the
scenario's verdict.  The readers here only read files a pass wrote into its directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from tcpchurn.lab.sampler import Sample
from tcpchurn.lab.scenarios import Scenario
from tcpchurn.lab.tuples import TupleStats


@dataclass
class PassResult:
    """One pass (before or after the fix)."""

    label: str
    out_dir: str
    settings: list[str]
    summary: dict[str, Any] | None
    findings: list[dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)
    stall_s: float | None = None
    tuples: TupleStats | None = None
    load_exit: int | None = None
    sysctls: dict[str, Any] = field(default_factory=dict)  # side -> SysctlSnapshot
    addrs: int = 1
    rate: float = 0.0
    close: str = "server"

    @property
    def first(self) -> str | None:
        """The limit id of the first finding, ``None`` when nothing was diagnosed."""
        return str(self.findings[0].get("limit")) if self.findings else None

    @property
    def limits(self) -> list[str]:
        """Every limit id diagnosed, in order."""
        return [str(f.get("limit")) for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        """What ``lab run --json`` prints for this pass."""
        return {
            "label": self.label,
            "out_dir": self.out_dir,
            "settings": self.settings,
            "first": self.first,
            "limits": self.limits,
            "stall_s": self.stall_s,
            "tuples": self.tuples.to_json() if self.tuples else None,
            "achieved_rate": (self.summary or {}).get("achieved_rate"),
            "connections": (self.summary or {}).get("connections"),
            "errors": (self.summary or {}).get("errors"),
            "load_exit": self.load_exit,
        }


@dataclass
class LabResult:
    """A scenario's verdict: did the diagnosis name the limit (and did the fix remove it)?"""

    scenario: Scenario
    before: PassResult
    after: PassResult | None = None
    fix_source: str | None = None
    fix_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The expected finding came first (none for the control), and the fix removed it."""
        want = self.scenario.expected
        named = self.before.first == want if want else not self.before.findings
        if self.after is None or want is None:
            return named
        return named and want not in self.after.limits

    @property
    def inconclusive(self) -> bool:
        """Our own generator fell behind before the limit showed (a busy machine): the
        pass measured tcpchurn, not the kernel, so it proves nothing either way."""
        return any(
            p is not None and p.first == "generator_saturated"
            for p in (self.before, self.after)
        )

    def to_json(self) -> dict[str, Any]:
        """What ``lab run --json`` prints."""
        return {
            "scenario": self.scenario.name,
            "expected": self.scenario.expected,
            "inconclusive": self.inconclusive,
            "ok": self.ok,
            "before": self.before.to_json(),
            "fix": {"source": self.fix_source, "lines": self.fix_lines} if self.after else None,
            "after": self.after.to_json() if self.after else None,
        }


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file, or ``None`` when it is missing (the load crashed)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_timeline(path: str) -> list[dict[str, Any]]:
    """The lines of a timeline.jsonl (a torn last line is skipped)."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


def findings_of(out_dir: str, summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run's findings: the summary's, or the diagnosis' over the timeline if the
    summary has no ``findings`` key (a run killed before it wrote them)."""
    if summary is None:
        return []
    found = summary.get("findings")
    if isinstance(found, list):
        return found
    try:
        from tcpchurn.diagnose.verdict import diagnose_run
    except ImportError:
        return []
    timeline = read_timeline(os.path.join(out_dir, "timeline.jsonl"))
    result = diagnose_run(timeline, summary)
    return [f if isinstance(f, dict) else f.to_json() for f in result]
