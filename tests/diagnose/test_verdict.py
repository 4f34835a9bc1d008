"""diagnose_run on synthetic timelines: every rule fires on its signal, and only on it.

Each positive case changes a healthy run (tests/diagnose/synth.py) the way the kernel
does when that limit is reached (KERNEL.md §1); each negative case is noise the verdict
must ignore.  Expected onsets are computed from the scenario, not copied from output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.diagnose.rules import LIMIT_IDS
from tcpchurn.diagnose.verdict import diagnose_run
from tests.diagnose.synth import Row, fail, latency, make_run

FIXTURES = Path(__file__).parent.parent / "fixtures" / "runs"

CT_MAX = 16384
RATE = 1000


def conntrack(t: int, row: Row) -> None:
    """The server's table fills at RATE/s up to CT_MAX, then SYNs are dropped."""
    ct = row["server"]["conntrack"]
    ct.update(active=True, max=CT_MAX, buckets=CT_MAX, count=min(RATE * t, CT_MAX))
    if RATE * t > CT_MAX:
        ct["stat_delta"]["drop"] = 3000
        row["client"]["counters_delta"]["TcpExt"]["TCPSynRetrans"] = 3000
        row["load"]["ok"] = 100
        row["load"]["inflight"] = 900 * (t - 16)
        row["load"]["latency_ms"]["connect"] = latency(1001.0, 3003.0, 3003.5, 3010.0, 100)


def ports(t: int, row: Row) -> None:
    """The client closes first: 28,232 ports at 1000/s run out after 28.2 s."""
    if t == 29:
        fail(row, "EADDRNOTAVAIL", 768)  # 28,232 - 28,000 = 232 still connected
    elif t > 29:
        fail(row, "EADDRNOTAVAIL", 1000)
    row["client"]["destinations"] = [{"remote": "198.18.0.2:80", "sockets": min(1000 * t, 28232),
                                      "states": {"TIME_WAIT": min(1000 * t, 28232)},
                                      "port_range": 28232}]


def from_t(start: int, change: Callable[[Row], None]) -> Callable[[int, Row], None]:
    def tweak(t: int, row: Row) -> None:
        if t >= start:
            change(row)
    return tweak


def tcpext(side: str, **values: float) -> Callable[[Row], None]:
    def change(row: Row) -> None:
        row[side]["counters_delta"]["TcpExt"].update(values)
    return change


def errors(name: str, count: int) -> Callable[[Row], None]:
    return lambda row: fail(row, name, count)


def accept(row: Row) -> None:
    row["server"]["counters_delta"]["TcpExt"].update(ListenOverflows=400, ListenDrops=400)
    row["server"]["listen"][0].update(queue=512, backlog=511)
    row["client"]["counters_delta"]["TcpExt"]["TCPSynRetrans"] = 400
    row["load"]["latency_ms"]["connect"] = latency(0.3, 0.5, 1003.0, 1010.0)


def orphan(row: Row) -> None:
    row["server"]["sockstat"]["orphan"] = 131072
    fail(row, "ECONNRESET", 2)


def slow_generator(row: Row) -> None:
    row["load"].update(achieved_rate=700.0, attempted=700, ok=700, skipped=300)
    row["load"]["latency_ms"]["schedule_lag"] = latency(150.0, 300.0, 420.0, 450.0)


def slow_server(row: Row) -> None:
    row["load"]["latency_ms"]["ttfb"] = latency(2500.0, 2800.0, 2900.0, 3000.0)


def dual_stack(row: Row) -> None:
    row["server"]["tcp"]["tw_v4mapped"] = row["server"]["sockstat"]["tw"]


def softnet(row: Row) -> None:
    row["client"]["softnet_delta"]["dropped"] = 200


def mem(row: Row) -> None:
    row["server"]["counters_delta"]["TcpExt"]["TCPMemoryPressures"] = 5
    row["server"]["sockstat"]["mem"] = 400000


# limit -> (tweak, make_run kwargs, side, severity, onset_s)
CASES: dict[str, tuple[Callable[[int, Row], None], dict[str, Any], str, str, float]] = {
    "conntrack_full": (conntrack, {"seconds": 25}, "server", "stopped", CT_MAX / RATE),
    "ephemeral_ports": (ports, {"seconds": 32, "close": "client"}, "client", "stopped", 28.232),
    "bind_port_conflict": (from_t(5, errors("EADDRINUSE", 500)), {}, "client", "degraded",
                           4.5),
    "tw_buckets": (from_t(10, tcpext("server", TCPTimeWaitOverflow=500)), {}, "server",
                   "warning", 9.0),
    "accept_queue": (from_t(3, accept), {}, "server", "degraded", 2.0),
    "syn_queue": (from_t(4, tcpext("server", TCPReqQFullDoCookies=50, SyncookiesSent=50)), {},
                  "server", "warning", 3.0),
    "orphans": (from_t(6, orphan), {}, "server", "degraded", 6.0),  # 0 at 5 s, full at 6 s
    "tcp_mem": (from_t(6, mem), {}, "server", "warning", 5.0),
    "fd_process": (from_t(4, errors("EMFILE", 900)), {}, "client", "stopped", 3.1),
    "fd_system": (from_t(4, errors("ENFILE", 900)), {}, "client", "stopped", 3.1),
    "netdev_backlog": (from_t(5, softnet), {}, "client", "degraded", 4.0),
    "generator_saturated": (from_t(3, slow_generator), {}, "client", "degraded", 2.0),
    "server_refused": (from_t(1, errors("ECONNREFUSED", 1000)), {}, "server", "stopped", 0.0),
    "server_slow": (from_t(5, slow_server), {}, "server", "degraded", 4.0),
    "unreachable": (from_t(1, errors("ENETUNREACH", 1000)), {}, "server", "stopped", 0.0),
    "dual_stack_tw": (from_t(1, dual_stack), {}, "server", "warning", 0.0),
}


def test_every_limit_has_a_case() -> None:
    assert set(CASES) == set(LIMIT_IDS)


@pytest.mark.parametrize("limit", sorted(CASES))
def test_rule_fires_first_with_its_side_severity_and_onset(limit: str) -> None:
    tweak, kwargs, side, severity, onset = CASES[limit]
    timeline, summary = make_run(tweak=tweak, **kwargs)
    verdict = diagnose_run(timeline, summary)
    assert verdict.findings, f"{limit}: nothing diagnosed"
    first = verdict.findings[0]
    assert (first.limit, first.side, first.severity) == (limit, side, severity)
    assert first.onset_s == pytest.approx(onset, abs=0.05)
    # The explanation is filled with the run's own figures: no template field left over.
    assert "{" not in first.explanation and first.explanation.strip()
    assert first.fix.lines()


def test_severity_follows_the_share_that_failed() -> None:
    # 5% failing after the onset degrades the run; 90% stops it (series.STOPPED_OK_SHARE).
    timeline, summary = make_run(tweak=from_t(4, errors("EMFILE", 50)))
    assert diagnose_run(timeline, summary).findings[0].severity == "degraded"


def test_conntrack_explanation_carries_the_arithmetic() -> None:
    timeline, summary = make_run(25, conntrack)
    first = diagnose_run(timeline, summary).findings[0]
    assert "16,384 of 16,384" in first.explanation
    assert "16.4 s" in first.explanation  # 16,384 / 1,000
    assert "136/s" in first.explanation  # 16,384 / 120
    assert first.evidence["syn_steps_s"] == [1.0, 3.0]


# --- noise that must not become a finding ---------------------------------------------
def refused_while_starting(t: int, row: Row) -> None:
    if t == 1:
        fail(row, "ECONNREFUSED", 300)
    if t == 7:
        fail(row, "ECONNREFUSED", 2)  # a stray one later


def latency_spike(t: int, row: Row) -> None:
    if t == 5:
        row["load"]["latency_ms"]["connect"] = latency(900.0, 1001.0, 1003.0, 1005.0)
        row["load"]["latency_ms"]["ttfb"] = latency(2500.0, 2800.0, 2900.0, 3000.0)
        row["load"]["latency_ms"]["schedule_lag"] = latency(80.0, 90.0, 120.0, 150.0)


def one_overflow_burst(t: int, row: Row) -> None:
    if t == 3:
        row["server"]["counters_delta"]["TcpExt"]["ListenOverflows"] = 50
        row["server"]["counters_delta"]["TcpExt"]["TCPTimeWaitOverflow"] = 50
        row["client"]["softnet_delta"]["dropped"] = 40


def few_errors_throughout(t: int, row: Row) -> None:
    fail(row, "ECONNRESET", 2)  # 0.2%: below 1% and below 3 per interval
    fail(row, "ETIMEDOUT", 1)


@pytest.mark.parametrize(
    "tweak",
    [None, refused_while_starting, latency_spike, one_overflow_burst, few_errors_throughout],
    ids=["healthy", "refused-at-start", "latency-spike", "one-burst", "stray-errors"],
)
def test_noise_is_not_a_finding(tweak: Callable[[int, Row], None] | None) -> None:
    timeline, summary = make_run(10, tweak)
    verdict = diagnose_run(timeline, summary)
    assert [f.limit for f in verdict.findings] == []
    assert not verdict.limited


def test_healthy_run_reports_headroom_of_every_table() -> None:
    timeline, summary = make_run(10, close="server")
    headroom = {(h.limit, h.side): h for h in diagnose_run(timeline, summary).headroom}
    tw = headroom[("tw_buckets", "client")]
    assert (tw.capacity, tw.rate_to_fill) == (131072, round(131072 / 60, 1))
    assert headroom[("fd_process", "client")].share == round(40 / 1048576, 4)
    server_tw = headroom[("tw_buckets", "server")]
    assert server_tw.peak == 10000  # 1000/s for 10 s, all still in TIME_WAIT
    assert ("accept_queue", "server") in headroom
    assert ("orphans", "client") in headroom


def test_conntrack_headroom_rate_to_fill_is_max_over_timeout() -> None:
    def tracked(t: int, row: Row) -> None:
        row["server"]["conntrack"].update(active=True, count=1000 * t)

    timeline, summary = make_run(10, tracked)
    rows = [h for h in diagnose_run(timeline, summary).headroom if h.limit == "conntrack_full"]
    assert [(h.side, h.peak, h.share, h.rate_to_fill) for h in rows] == [
        ("server", 10000, round(10000 / 262144, 4), round(262144 / 120, 1))
    ]


# --- ranking --------------------------------------------------------------------------
def test_findings_ranked_by_onset_then_warnings() -> None:
    def both(t: int, row: Row) -> None:
        conntrack(t, row)  # full at 16.4 s
        if t >= 5:
            fail(row, "EMFILE", 50)  # from 5 s: earlier, so first
        if t >= 2:
            row["server"]["counters_delta"]["TcpExt"]["TCPTimeWaitOverflow"] = 10  # warning

    timeline, summary = make_run(25, both)
    limits = [(f.limit, f.severity) for f in diagnose_run(timeline, summary).findings]
    assert limits[:2] == [("fd_process", "degraded"), ("conntrack_full", "stopped")]
    assert limits[-1] == ("tw_buckets", "warning")


def test_consequence_yields_to_its_cause() -> None:
    # Accept queue overflow makes connects time out too: the queue is the finding,
    # not "unreachable".
    def overflow(t: int, row: Row) -> None:
        if t >= 3:
            accept(row)
            fail(row, "ETIMEDOUT", 100)

    timeline, summary = make_run(10, overflow)
    assert [f.limit for f in diagnose_run(timeline, summary).findings] == ["accept_queue"]


def crowded_ports(held: int) -> Callable[[int, Row], None]:
    """Bare connections the client closes first, at 2x what the generator reaches: a
    full sample every 5 s shows ``held`` of the destination's 28,232 ports in TIME_WAIT
    (tcp_tw_reuse=2 keeps it below the range), and no connect() fails."""
    def tweak(t: int, row: Row) -> None:
        ld = row["load"]
        ld.update(target_rate=2000.0, achieved_rate=1000.0, attempted=1000, ok=1000,
                  skipped=1000)
        ld["latency_ms"]["schedule_lag"] = latency(2000.0, 4000.0, 5000.0, 5001.0)
        # from the schedule, connects sit "on" the 3 s SYN step: the generator's lag
        ld["latency_ms"]["connect"] = latency(2500.0, 3100.0, 5000.0, 5001.0)
        ld["latency_from_actual_start_ms"] = {"connect": latency(0.5, 3.3, 47.0, 60.0)}
        if t % 5 == 0:
            row["client"]["destinations"] = [
                {"remote": "198.18.0.2:80", "sockets": held, "states": {"TIME_WAIT": held},
                 "port_range": 28232}]
    return tweak


def test_a_generator_behind_with_most_ports_held_is_the_port_search() -> None:
    timeline, summary = make_run(15, crowded_ports(17775), rate=2000.0, close="client")
    findings = diagnose_run(timeline, summary).findings
    # not "give the generator more CPU" (it yields), not "unreachable" (lag, no SYN lost)
    assert [(f.limit, f.side, f.severity) for f in findings] == [
        ("ephemeral_ports", "client", "degraded")]
    f = findings[0]
    assert f.onset_s == 0.0  # the generator's onset; the first full sample came at 5 s
    assert "searched the range for a free port: 198.18.0.2:80 held 17,775 of the 28,232" \
        in f.explanation
    assert "started 1,000 of 2,000 connections/s" in f.explanation
    assert "EADDRNOTAVAIL" not in f.explanation


def test_a_generator_behind_with_few_ports_held_stays_the_generator() -> None:
    timeline, summary = make_run(15, crowded_ports(5000), rate=2000.0, close="client")
    assert [f.limit for f in diagnose_run(timeline, summary).findings] == [
        "generator_saturated"]


def test_syn_steps_are_read_from_the_actual_start() -> None:
    """A lagging generator's connects, from the schedule, may sit on a SYN step; from
    their actual start they do not, and nothing was retransmitted: not "unreachable"."""
    timeline, summary = make_run(10, from_t(1, slow_generator))
    for row in timeline:
        row["load"]["latency_ms"]["connect"] = latency(2900.0, 3050.0, 3100.0, 3200.0)
        row["load"]["latency_from_actual_start_ms"] = {"connect": latency()}
    assert [f.limit for f in diagnose_run(timeline, summary).findings] == [
        "generator_saturated"]
    # the same connects from the actual start on the step: SYNs were lost
    for row in timeline:
        row["load"]["latency_from_actual_start_ms"] = {
            "connect": latency(2900.0, 3050.0, 3100.0, 3200.0)}
    assert "unreachable" in [f.limit for f in diagnose_run(timeline, summary).findings]


def test_loopback_without_server_sample_reads_the_client_namespace() -> None:
    def overflow(t: int, row: Row) -> None:
        if t >= 3:
            row["client"]["counters_delta"]["TcpExt"]["ListenOverflows"] = 300

    timeline, summary = make_run(8, overflow, target="http://127.0.0.1:8080/", server=False)
    first = diagnose_run(timeline, summary).findings[0]
    assert (first.limit, first.side) == ("accept_queue", "server")


# --- JSON contract (docs/schema.md §4, §5) -------------------------------------------
FINDING_KEYS = {"limit", "side", "onset_s", "severity", "title", "evidence", "explanation",
                "fix", "wrong_fixes"}
HEADROOM_KEYS = {"limit", "side", "peak", "capacity", "share", "rate_to_fill"}


def _load(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    d = FIXTURES / name
    timeline = [json.loads(line) for line in (d / "timeline.jsonl").read_text().splitlines()]
    return timeline, json.loads((d / "summary.json").read_text())


def test_recorded_seed_2009_run_names_conntrack_then_explains_tcp6() -> None:
    timeline, summary = _load("seed-2009")
    verdict = diagnose_run(timeline, summary)
    out = json.loads(json.dumps(verdict.to_json()))
    assert [(f["limit"], f["side"]) for f in out["findings"]] == [
        ("conntrack_full", "server"), ("dual_stack_tw", "server")]
    first = out["findings"][0]
    assert set(first) == FINDING_KEYS
    assert first["onset_s"] == pytest.approx(16.4, abs=0.1)
    assert any("4396e46187ca" in w for w in first["wrong_fixes"])
    assert "tcp6" in out["findings"][1]["explanation"]
    assert all(set(h) == HEADROOM_KEYS for h in out["headroom"])


def test_recorded_healthy_run_has_no_finding() -> None:
    timeline, summary = _load("healthy")
    verdict = diagnose_run(timeline, summary)
    assert verdict.findings == []
    assert verdict.headroom


def test_accept_queue_seen_full_without_counters_is_still_the_accept_queue() -> None:
    # A remote server watched through an exporter without TcpExt: the LISTEN queue at
    # backlog+1 in consecutive samples is the evidence.
    def full(t: int, row: Row) -> None:
        if t >= 4:
            row["server"]["listen"][0].update(queue=512, backlog=511)

    timeline, summary = make_run(8, full)
    first = diagnose_run(timeline, summary).findings[0]
    assert (first.limit, first.onset_s, first.evidence["queue_peak"]) == ("accept_queue", 3.0,
                                                                         512)


def test_a_queue_at_its_backlog_is_not_full() -> None:
    def busy(t: int, row: Row) -> None:
        row["server"]["listen"][0].update(queue=511, backlog=511)

    timeline, summary = make_run(8, busy)
    assert diagnose_run(timeline, summary).findings == []


def test_dual_stack_note_from_sparse_dumps() -> None:
    # The per-family dump comes every 5th interval; in between tw_v4mapped is null.
    def sparse(t: int, row: Row) -> None:
        tcp = row["server"]["tcp"]
        tcp["tw_v4mapped"] = row["server"]["sockstat"]["tw"] if t % 5 == 0 else None

    timeline, summary = make_run(12, sparse)
    found = diagnose_run(timeline, summary).findings
    assert [(f.limit, f.onset_s, f.severity) for f in found] == [("dual_stack_tw", 4.0, "warning")]


@pytest.mark.parametrize(("where", "somaxconn", "max_orphans"),
                         [("netns srv", None, 131072), ("remote http://h:9100/", None, None)])
def test_server_figures_use_only_sysctls_that_hold_there(where: str, somaxconn: int | None,
                                                         max_orphans: int | None) -> None:
    # The summary carries the client's sysctls: a server in another netns shares only the
    # global ones (KERNEL.md §2), a remote server none.
    def both(t: int, row: Row) -> None:
        row["server"]["where"] = where
        if t >= 3:
            accept(row)
            row["server"]["sockstat"]["orphan"] = 131072

    timeline, summary = make_run(8, both)
    found = {f.limit: f for f in diagnose_run(timeline, summary).findings}
    assert found["accept_queue"].evidence["somaxconn"] == somaxconn
    if max_orphans is None:
        assert "orphans" not in found  # capacity unknown: no level to compare
    else:
        assert found["orphans"].evidence["max_orphans"] == max_orphans


def test_server_figures_use_the_servers_own_sysctls_when_recorded() -> None:
    # `run --watch-netns` records the server namespace's sysctls (schema §4
    # environment.server_sysctls): those hold there, not the client's.
    def both(t: int, row: Row) -> None:
        row["server"]["where"] = "netns srv"
        if t >= 3:
            accept(row)

    timeline, summary = make_run(8, both)
    summary["environment"]["server_sysctls"] = {"net.core.somaxconn": 64}
    found = {f.limit: f for f in diagnose_run(timeline, summary).findings}
    assert found["accept_queue"].evidence["somaxconn"] == 64
