"""The verdict: a run's timeline in, ranked findings and headroom out (sans-IO).

``diagnose_run(timeline, summary)`` evaluates every row of
:data:`tcpchurn.diagnose.rules.RULES` on every side it can bite, keeps what is sustained
(noise rules: :mod:`tcpchurn.diagnose.series`), drops findings another finding explains
(``yields_to``), and ranks them:

1. limits that hurt the run ("stopped", "degraded") by onset, the first reached first;
2. then warnings (near-full tables, harmless overflows, the dual-stack note) by onset.

Ties (same onset) keep the table's order, which lists causes before consequences.

>>> v = diagnose_run([], {"target_rate": 10})
>>> v.findings, v.to_json()["findings"]
([], [])
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcpchurn.diagnose.evidence import Evidence
from tcpchurn.diagnose.fixes import Fix, FixContext
from tcpchurn.diagnose.headroom import Headroom, compute_headroom
from tcpchurn.diagnose.rules import RULES, Rule
from tcpchurn.diagnose.series import RunData, target_port
from tcpchurn.diagnose.sysctls import Sysctls, SysctlSource

SEVERITY_RANK = {"stopped": 0, "degraded": 0, "warning": 1}
YIELD_SLACK_S = 1.0  # a cause may be seen up to one interval after its consequence


class _Formatter(string.Formatter):
    """``str.format`` for explanations: a missing figure (None) reads "unknown" whatever
    the spec; ``{x:steps}`` renders a list of seconds as "1 s, 3 s" (or "none")."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "unknown"
        if format_spec == "steps":
            steps = value if isinstance(value, list) else []
            return ", ".join(f"{v:g} s" for v in steps) or "none"
        if isinstance(value, float) and not format_spec and value.is_integer():
            return str(int(value))  # counts arrive as floats from the series helpers
        if isinstance(value, list):
            return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
        try:
            return str(super().format_field(value, format_spec))
        except (ValueError, TypeError):
            return str(value)


def render(template: str, figures: Mapping[str, Any]) -> str:
    """Fill an explanation template with a finding's figures.

    >>> render("{count:,.0f} of {max:,.0f} at {steps:steps}", {"count": 16384.0, "max": None,
    ...        "steps": [1.0, 3.0]})
    '16,384 of unknown at 1 s, 3 s'
    """
    return _Formatter().vformat(template, (), dict(figures))


@dataclass(frozen=True)
class Finding:
    """One diagnosed limit (docs/schema.md §5)."""

    limit: str
    side: str
    onset_s: float
    severity: str
    title: str
    evidence: dict[str, Any]
    explanation: str
    fix: Fix
    wrong_fixes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The schema's Finding; ``fix`` as lines (the machine parts: ``fix_for``)."""
        return {
            "limit": self.limit,
            "side": self.side,
            "onset_s": round(self.onset_s, 2),
            "severity": self.severity,
            "title": self.title,
            "evidence": self.evidence,
            "explanation": self.explanation,
            "fix": self.fix.lines(),
            "wrong_fixes": list(self.wrong_fixes),
        }


@dataclass(frozen=True)
class Verdict:
    """Findings (ranked) and the headroom of every table the run touched."""

    findings: list[Finding] = field(default_factory=list)
    headroom: list[Headroom] = field(default_factory=list)

    def __iter__(self) -> Iterator[Finding]:
        """Iterating a verdict iterates its findings, first reached first."""
        return iter(self.findings)

    @property
    def first(self) -> Finding | None:
        """The limit that was reached first, if any."""
        return self.findings[0] if self.findings else None

    @property
    def limited(self) -> bool:
        """True when a finding hurt the run (not only warnings): ``run`` exits 1."""
        return any(f.severity != "warning" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """``{"findings": [...], "headroom": [...]}`` for the summary."""
        return {
            "findings": [f.to_json() for f in self.findings],
            "headroom": [h.to_json() for h in self.headroom],
        }


def _finding(rule: Rule, side: str, found: Evidence, run: RunData) -> Finding:
    figures = {**found.figures, "side": side, "onset_s": found.onset_s}
    env = run.summary.get("environment")
    sources = env.get("source_addresses") if isinstance(env, Mapping) else None
    ctx = FixContext(
        rate=run.rate() or 1.0,
        port=target_port(run.summary.get("target")),
        loopback=run.loopback,
        side=side,
        close=run.closes_first(),
        source_ips=len(sources) if isinstance(sources, list) and sources else 1,
        sysctls=run.sysctls_for(side),
        evidence=found.figures,
    )
    return Finding(
        limit=rule.id,
        side=side,
        onset_s=found.onset_s,
        severity=found.severity,
        title=rule.title,
        evidence={k: v for k, v in found.figures.items()},
        explanation=render(rule.explanation, figures),
        fix=rule.fix(ctx),
        wrong_fixes=rule.wrong_fixes,
    )


def _yielded(f: Finding, others: Sequence[Finding]) -> bool:
    causes = next(r.yields_to for r in RULES if r.id == f.limit)
    return any(
        g.limit in causes and g.onset_s <= f.onset_s + YIELD_SLACK_S and g.severity != "warning"
        for g in others
    )


def diagnose_run(
    timeline: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    sysctls: SysctlSource | Mapping[str, object] | None = None,
) -> Verdict:
    """Which limits a run reached, first first, and the headroom of every table.

    ``sysctls`` defaults to the summary's ``environment.sysctls`` (docs/schema.md §4);
    the server side's come from ``environment.server_sysctls`` when the run recorded them.
    """
    env = summary.get("environment")
    env = env if isinstance(env, Mapping) else {}
    if sysctls is None:
        env_sysctls = env.get("sysctls")
        sysctls = env_sysctls if isinstance(env_sysctls, Mapping) else None
    # The watched server's own sysctls, when the run could read them (its namespace or
    # process): a new netns starts from kernel defaults, not the host's (KERNEL.md §2).
    server = env.get("server_sysctls")
    server_sysctls = Sysctls(server) if isinstance(server, Mapping) and server else None
    run = RunData(timeline, summary, Sysctls(sysctls), server_sysctls)
    found: list[tuple[int, Finding]] = []
    if run.timeline:
        same = _same_ns(run)
        for order, rule in enumerate(RULES):
            for side in rule.sides[:1] if same else rule.sides:
                if run.has_side(side):
                    ev = rule.evidence(run, side)
                    if ev is not None:
                        found.append((order, _finding(rule, side, ev, run)))
    findings = [f for _, f in found]
    kept = [(o, f) for o, f in found if not _yielded(f, findings)]
    kept.sort(key=lambda of: (SEVERITY_RANK[of[1].severity], of[1].onset_s, of[0]))
    return Verdict([f for _, f in kept], compute_headroom(run) if run.timeline else [])


def _same_ns(run: RunData) -> bool:
    """Client and server are one namespace (loopback, no server sample): evaluate a
    two-sided rule once, on its first side, not twice on the same numbers."""
    return run.sample(0, "server") is run.sample(0, "client")
