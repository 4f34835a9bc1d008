"""Every lab scenario end to end: real namespaces, real servers, the real load and diagnosis.

Each test asserts the first finding's limit id (none for ``healthy``), and for the
scenarios with ``--fix`` that the diagnosis' own fix removes it; and every test checks
that the host is exactly as before (``host_unchanged``).  About 2.5 minutes in all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.lab.results import LabResult
from tcpchurn.lab.runner import LabOptions
from tcpchurn.lab.runner import run_scenario as _run_scenario
from tcpchurn.lab.scenarios import SCENARIOS, Scenario, by_name
from tests.lab.hoststate import HostState

pytestmark = [pytest.mark.root, pytest.mark.lab]

def run_scenario(scenario: Scenario, opts: LabOptions, progress: Callable[[str], None]
                 ) -> LabResult:
    """Up to two retries when our own generator fell behind (other jobs on a 2-core box):
    such a pass measured tcpchurn, not the kernel, and proves nothing either way."""
    result = _run_scenario(scenario, opts, progress)
    for _ in range(2):
        if result.ok or not result.inconclusive:
            break
        result = _run_scenario(scenario, opts, progress)
    return result


# conntrack-client's fix resizes the global conntrack hash: the journal must put it back.
WITH_FIX = {"conntrack-full", "conntrack-client", "ephemeral-ports", "accept-queue",
            "tw-buckets", "fd-limit"}


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_names_its_limit_first(
    name: str, tmp_path: Path, host_unchanged: HostState
) -> None:
    scenario = by_name(name)
    fix = name in WITH_FIX
    lines: list[str] = []
    result = run_scenario(scenario, LabOptions(fix=fix, out_dir=str(tmp_path)), lines.append)
    before = result.before
    if scenario.expected is None:
        assert before.findings == [], before.limits
    else:
        assert before.first == scenario.expected, before.limits
    assert before.summary is not None and before.summary["connections"]["attempted"] > 0
    if fix:
        assert result.after is not None
        assert scenario.expected not in result.after.limits, result.after.limits
        assert result.fix_source is not None and "diagnosis" in result.fix_source
        assert (tmp_path / "before" / "summary.json").exists()
        assert (tmp_path / "after" / "timeline.jsonl").exists()
    assert result.ok
    assert any(line.startswith("restored the host") for line in lines)


def test_seed_2009_stalls_when_conntrack_is_full(tmp_path: Path,
                                                 host_unchanged: HostState) -> None:
    """The 2009 numbers: 16,384 entries at 1,000/s -> full after 16.4 s (the forecast)."""
    result = run_scenario(by_name("seed-2009"), LabOptions(out_dir=str(tmp_path)),
                          lambda _: None)
    p = result.before
    assert p.first == "conntrack_full"
    assert p.stall_s is not None
    # Within 25 % of 16,384 / 1,000 (DESIGN.md's bar for forecasts); measured 16.9 s.
    assert abs(p.stall_s - 16.384) / 16.384 < 0.25, p.stall_s
    # Read at the end of the run: at >= 95 % full the GC worker evicts TIME_WAIT entries
    # (gc_worker_can_early_drop), so a few hundred may be gone by then.
    assert p.tuples is not None and p.tuples.distinct_tuples == p.tuples.entries
    assert p.tuples.entries >= 0.95 * 16384 and p.tuples.sources == 8
    assert p.tuples.odd_ports == 0  # connect() without bind(): even ports first
    # The reporter's view: IPv4 clients of a dual-stack Apache show up in tcp6 only.
    last = [s for s in p.samples if s.tcp6_lines is not None][-1]
    assert last.tcp_lines == 0 and last.tcp6_v4mapped is not None
    assert last.tcp6_v4mapped > 15000


def test_seed_2009_with_one_address_reuses_4_tuples_and_never_fills(
    tmp_path: Path, host_unchanged: HostState
) -> None:
    """KERNEL.md section 6, verified: one client address reaches fewer distinct 4-tuples
    than the table holds (even ports only, re-used after ~3,100 connections), so the
    16,384-entry table does not fill and the 2009 stall does not happen."""
    result = run_scenario(
        by_name("seed-2009"),
        LabOptions(client_addrs=1, duration=20, out_dir=str(tmp_path)),
        lambda _: None,
    )
    p = result.before
    assert p.summary is not None
    ok = p.summary["connections"]["ok"]
    assert ok == p.summary["connections"]["attempted"] >= 19000  # nothing was dropped
    assert p.stall_s is None and "conntrack_full" not in p.limits
    t = p.tuples
    assert t is not None and t.sources == 1
    assert t.entries == t.distinct_tuples  # one entry per 4-tuple ...
    assert t.distinct_tuples < 14116 < ok  # ... fewer than the even ports, far fewer than
    assert t.odd_ports == 0  # the connections: connect() picks even ports only
