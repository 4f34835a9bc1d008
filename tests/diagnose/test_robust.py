"""diagnose_run never raises on odd input: nulls, missing keys, wrong types, empty runs
(kernel variance and older producers are normal, STYLE.md rule 5)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tcpchurn.diagnose.verdict import diagnose_run
from tests.diagnose.synth import make_run
from tests.diagnose.test_verdict import CASES

ODD: list[Any] = [None, "x", [], {}, -1, 0, 1e18, True, [{"a": 1}], {"queue": "q"}]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@pytest.mark.parametrize("limit", sorted(CASES))
def test_mutated_runs_never_raise(limit: str) -> None:
    rng = random.Random(limit)  # deterministic per case
    tweak, kwargs, *_ = CASES[limit]
    for _ in range(30):
        timeline, summary = make_run(tweak=tweak, **kwargs)
        paths = _paths(timeline)
        for path in rng.sample(paths, 25):
            try:
                _set(timeline, path, rng.choice(ODD))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation replaced a parent
        spaths = _paths(summary)
        for path in rng.sample(spaths, 3):
            try:
                _set(summary, path, rng.choice(ODD))
            except (KeyError, IndexError, TypeError):
                continue
        verdict = diagnose_run(timeline, summary)
        json.dumps(verdict.to_json())  # and the result is JSON


@pytest.mark.parametrize("timeline", [[], [{}], [{"t": 1.0}], [{"t": 1.0, "load": None,
                                                             "client": None, "server": None}]])
def test_empty_or_bare_timelines(timeline: list[dict[str, Any]]) -> None:
    verdict = diagnose_run(timeline, {})
    assert verdict.findings == []
