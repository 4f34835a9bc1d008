"""The runner's pure parts: the summary it builds, its exit codes, its fd warning."""

from __future__ import annotations

import pickle
import resource
from pathlib import Path
from typing import Any

import pytest

from tcpchurn.load.config import LoadConfig, parse_target
from tcpchurn.run_summary import apply_verdict, build_summary
from tcpchurn.runner import RunConfig, RunResult, fd_estimate, preflight_warnings

TOTALS: dict[str, Any] = {
    "target_rate": 1000.0,
    "achieved_rate": 999.0,
    "connections": {"attempted": 999, "ok": 990, "failed": 9, "late": 0, "skipped": 0},
    "errors": {"ECONNREFUSED": 9},
    "first_error_s": {"ECONNREFUSED": 0.25},
    "latency_ms": {"connect": {"p50": 0.1}},
    "latency_from_actual_start_ms": {"connect": {"p50": 0.1}},
}


def _cfg(**load: Any) -> RunConfig:
    base: dict[str, Any] = {"target": parse_target("http://127.0.0.1:8080/"), "rate": 1000.0,
                            "duration": 1.0, "workers": 2, "timeout": 5.0}
    base.update(load)
    return RunConfig(load=LoadConfig(**base), out_dir=Path("out"))


def _summary(totals: dict[str, Any] = TOTALS, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "totals": totals, "started": 1795737600.5, "duration_s": 1.0004,
        "interrupted": False, "target": "http://127.0.0.1:8080/", "environment": {"cpus": 2},
        "config": _cfg().to_json(), "warnings": [],
    }
    args.update(kw)
    return build_summary(**args)


def test_summary_has_every_key_of_schema_section_4() -> None:
    summary = _summary()
    assert set(summary) >= {
        "tcpchurn_version", "started", "duration_s", "interrupted", "target", "target_rate",
        "achieved_rate", "connections", "errors", "first_error_s", "latency_ms",
        "latency_from_actual_start_ms", "environment", "findings", "headroom", "config",
        "generator_saturated", "warnings",
    }
    assert summary["started"] == "2026-11-27T00:00:00.500000Z"
    assert summary["duration_s"] == 1.0
    assert summary["connections"] == TOTALS["connections"]
    assert summary["config"]["target"] == "http://127.0.0.1:8080/"
    assert summary["config"]["rate"] == 1000.0 and summary["config"]["workers"] == 2


@pytest.mark.parametrize(("late", "skipped", "saturated"),
                         [(0, 0, False), (3, 0, False), (0, 4, False), (0, 5, False), (0, 6, True)])
def test_generator_saturated_when_skipped(late: int, skipped: int, saturated: bool) -> None:
    totals = dict(TOTALS)
    totals["connections"] = dict(TOTALS["connections"], late=late, skipped=skipped)
    summary = _summary(totals)
    assert summary["generator_saturated"] is saturated
    assert summary["connections"]["late"] == late


def test_a_generator_saturated_finding_sets_the_flag() -> None:
    summary = apply_verdict(_summary(), [{"limit": "generator_saturated"}], [])
    assert summary["generator_saturated"] is True
    summary = apply_verdict(_summary(), [{"limit": "tw_buckets"}], [{"limit": "tw_buckets"}])
    assert summary["generator_saturated"] is False
    assert summary["headroom"] == [{"limit": "tw_buckets"}]


def _result(summary: dict[str, Any], interrupted: bool = False) -> RunResult:
    return RunResult(Path("out"), summary, 1, interrupted)


def test_exit_codes() -> None:
    assert _result(_summary(), interrupted=True).exit_code == 130
    assert _result(_summary()).exit_code == 1  # 9 failed
    clean = dict(TOTALS, errors={}, first_error_s={},
                 connections=dict(TOTALS["connections"], ok=999, failed=0))
    assert _result(_summary(clean)).exit_code == 0
    dead = dict(TOTALS, connections=dict(TOTALS["connections"], ok=0, failed=999))
    result = _result(_summary(dead))
    assert result.target_never_worked and result.exit_code == 3
    with_finding = _summary(clean)
    with_finding["findings"] = [{"limit": "accept_queue", "severity": "degraded"}]
    assert _result(with_finding).exit_code == 1
    only_advice = _summary(clean)
    only_advice["findings"] = [{"limit": "dual_stack_tw", "severity": "warning"}]
    assert _result(only_advice).exit_code == 0


def test_run_config_pickles() -> None:
    cfg = _cfg()
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_fd_estimate_is_per_worker_rate_times_timeout() -> None:
    assert fd_estimate(_cfg(rate=1000.0, workers=2, timeout=5.0)) == 2501
    assert fd_estimate(_cfg(rate=1000.0, workers=2, timeout=5.0, max_inflight=100)) == 100


def test_fd_warning_only_beyond_rlimit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite RLIMIT_NOFILE here")
    assert preflight_warnings(_cfg(rate=10.0, workers=1, timeout=1.0)) == []
    big = _cfg(rate=float(hard) * 4, workers=1, timeout=1.0, max_inflight=10**9)
    (warning,) = preflight_warnings(big)
    assert "RLIMIT_NOFILE" in warning and f"{hard:,}" in warning
