"""minmax down-sampling: bounded size, spikes kept, order kept, the short case untouched."""

from __future__ import annotations

import random

import pytest

from tcpchurn.report.downsample import minmax


@pytest.mark.parametrize(("n", "max_points"), [(0, 10), (5, 10), (10, 10)])
def test_short_series_pass_through(n: int, max_points: int) -> None:
    ts = [float(i) for i in range(n)]
    vs = [float(i * i) for i in range(n)]
    assert minmax(ts, vs, max_points) == (ts, vs)


@pytest.mark.parametrize(("n", "max_points"), [(11, 10), (1000, 100), (36_000, 1000),
                                               (36_001, 999)])
def test_long_series_bounded_and_envelope_kept(n: int, max_points: int) -> None:
    rng = random.Random(n)
    ts = [i * 0.1 for i in range(n)]
    vs = [rng.random() for _ in range(n)]
    spike = n // 3
    vs[spike] = 50.0   # a one-sample burst must survive
    vs[spike + 1] = -50.0
    out_t, out_v = minmax(ts, vs, max_points)
    assert len(out_t) == len(out_v) <= max_points
    assert max(out_v) == 50.0 and min(out_v) == -50.0
    assert out_t == sorted(out_t)
    # every kept point is a real point of the input
    assert all(vs[round(t / 0.1)] == v for t, v in zip(out_t, out_v, strict=True))


def test_every_bucket_contributes_its_extremes() -> None:
    ts = list(range(8))
    vs = [3, 1, 2, 4, 9, 8, 0, 5]
    # two buckets: [3,1,2,4] -> min 1 @1, max 4 @3; [9,8,0,5] -> max 9 @4, min 0 @6
    assert minmax(ts, vs, 4) == ([1, 3, 4, 6], [1, 4, 9, 0])


@pytest.mark.parametrize(("ts", "vs", "max_points", "msg"), [
    ([1.0, 2.0], [1.0], 10, "2 times but 1 values"),
    ([1.0], [1.0], 1, "max_points=1"),
])
def test_bad_arguments(ts: list[float], vs: list[float], max_points: int, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        minmax(ts, vs, max_points)
