"""The plot table: every limit the diagnosis can name has a plot to link to."""

from __future__ import annotations

from tcpchurn.diagnose.rules import RULES
from tcpchurn.report.plots import PLOT_FOR_LIMIT, STATIC_SPECS, onsets, specs
from tcpchurn.report.series import Series


def test_every_limit_id_links_to_a_plot_that_exists() -> None:
    ids = {spec.id for spec in specs([Series()])}
    assert {r.id for r in RULES} <= set(PLOT_FOR_LIMIT)
    assert set(PLOT_FOR_LIMIT.values()) <= ids


def test_plot_ids_are_unique_and_described() -> None:
    all_specs = specs([Series()])
    assert len({s.id for s in all_specs}) == len(all_specs) == len(STATIC_SPECS) + 1
    assert all(len(s.alt) > 20 and s.panels for s in all_specs)


def test_onsets_skip_findings_without_one() -> None:
    findings = [{"limit": "a", "onset_s": 3}, {"limit": "b", "onset_s": None},
                {"limit": "c", "onset_s": True}, "junk", {"onset_s": 1.5}]
    assert onsets(findings) == [(3.0, "a"), (1.5, "?")]
    assert onsets(None) == []
