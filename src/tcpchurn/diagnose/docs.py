"""docs/limits.md, generated from the rules table so the two cannot drift.

Regenerate with ``python scripts/gen_limits_md.py`` (writes docs/limits.md); a test fails when
the checked-in file differs from :func:`render_limits_md`.
"""

from __future__ import annotations

from tcpchurn.diagnose import series
from tcpchurn.diagnose.fixes import FixContext
from tcpchurn.diagnose.rules import RULES

_HEADER = f"""# Limits tcpchurn diagnoses

Generated from `tcpchurn.diagnose.rules.RULES` by `python scripts/gen_limits_md.py`;
do not edit by hand (a test checks this file against the table).

A finding (docs/schema.md §5) names one of these ids, the side it bit, its onset, a
severity (`stopped`: fewer than {series.STOPPED_OK_SHARE:.0%} of connections succeeded
after the onset; `degraded`: a limit was reached and hurt the run; `warning`: reached or
nearly reached without harm yet), the evidence figures, an explanation with the run's own
numbers, the fix and the wrong fixes. Findings are ranked with the first limit reached
first, warnings last; `tcpchurn doctor` forecasts the same tables before a run.

## Noise

A single bad interval is not a limit. A condition counts only when it is **sustained**:
true in {series.SUSTAIN} consecutive intervals, or from its onset to the end of the run
(latency conditions need {series.SUSTAIN} consecutive intervals in all cases). An error
kind counts in an interval when it reaches both {series.ERROR_MIN} occurrences and
{series.ERROR_SHARE:.0%} of the connections attempted; a table is full at
{series.FULL_SHARE:.0%} of its capacity and near-full (a warning) at
{series.NEAR_SHARE:.0%}. A few refused connections while a server starts, one slow
interval, or a burst of overflows in one second therefore produce no finding. A finding
that is the consequence of another one seen no later (`yields to`) is dropped: connect
timeouts behind a full accept queue are the accept queue.

| id | title | bites |
|---|---|---|
"""


def render_limits_md() -> str:
    """The whole of docs/limits.md."""
    out = [_HEADER]
    out.extend(f"| `{r.id}` | {r.title} | {', '.join(r.sides)} |\n" for r in RULES)
    for r in RULES:
        fix = r.fix(FixContext(rate=1000.0, port=80))
        out.append(f"\n## `{r.id}`: {r.title}\n\n")
        out.append(f"- **Bites:** {', '.join(r.sides)}\n")
        out.append(f"- **Signals:** {r.signals}\n")
        out.append(f"- **Arithmetic:** {r.arithmetic}\n")
        out.append(f"- **Fix** (sized for 1,000/s to port 80): {fix.summary}\n")
        for line in fix.lines()[1:]:
            first = line.splitlines()[0]
            out.append(f"  - `{first}`\n")
        if r.wrong_fixes:
            out.append("- **Wrong fixes:**\n")
            out.extend(f"  - {w}\n" for w in r.wrong_fixes)
        if r.yields_to:
            out.append(f"- **Yields to:** {', '.join(f'`{y}`' for y in r.yields_to)}\n")
        out.append(f"- **Explanation template:** {r.explanation}\n")
    return "".join(out)

