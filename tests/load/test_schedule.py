"""The schedule on a fake clock: exact counts, the ramp's shape, Poisson statistics,
and worker shares that interleave to the total exactly."""

from __future__ import annotations

import itertools
import math

import pytest

from tcpchurn.load.schedule import INF, Schedule


def drain(s: Schedule, until: float) -> list[tuple[int, float]]:
    return s.due(until)


@pytest.mark.parametrize(
    ("rate", "duration", "at", "count"),
    [
        (1000, 10, 0.0, 1),  # the first connection is due at t = 0
        (1000, 10, 0.0005, 1),
        (1000, 10, 0.001, 2),
        (1000, 10, 1.0, 1001),
        (1000, 10, 9.9999, 10000),
        (1000, 10, 100.0, 10000),  # never more than rate x duration
        (3, 1, 1.0, 3),  # 1/3 does not round its way to a 4th
        (0.5, 10, 10.0, 5),
        (7, 2, 0.999, 7),
    ],
)
def test_uniform_counts_at_given_times(rate: float, duration: float, at: float, count: int) -> None:
    assert len(drain(Schedule(rate, duration), at)) == count


def test_uniform_times_are_exact_multiples() -> None:
    s = Schedule(rate=4, duration=1)
    assert s.due(1.0) == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75)]
    assert s.finished and s.next_time == INF


def test_due_respects_limit_and_resumes() -> None:
    s = Schedule(rate=100, duration=1)
    first = s.due(0.5, limit=10)
    rest = s.due(0.5)
    assert [n for n, _ in first] == list(range(10))
    assert [n for n, _ in rest] == list(range(10, 51))


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_worker_shares_interleave_to_the_total(workers: int) -> None:
    rate, duration = 1001.0, 3.0  # rate not divisible by any worker count here
    merged: list[tuple[int, float]] = []
    for i in range(workers):
        part = Schedule(rate, duration, index=i, count=workers).due(INF)
        assert all(n % workers == i for n, _ in part)
        merged += part
    merged.sort()
    assert [n for n, _ in merged] == list(range(3003))
    whole = Schedule(rate, duration).due(INF)
    assert merged == whole


def test_expected_counts_sum_over_workers_and_intervals() -> None:
    rate, duration, workers = 333.0, 5.0, 3
    scheds = [Schedule(rate, duration, index=i, count=workers) for i in range(workers)]
    for k in range(5):
        per_worker = [s.expected(k, k + 1) for s in scheds]
        assert sum(per_worker) == 333
        assert scheds[0].expected_total(k, k + 1) == 333
    # and the per-worker count matches what due() hands out in that interval
    s = Schedule(rate, duration, index=1, count=workers)
    got = [t for _, t in s.due(INF)]
    assert sum(1 for t in got if 2 <= t < 3) == s.expected(2, 3)


def test_ramp_shape_is_quadratic_then_linear() -> None:
    # 1000/s with a 2 s ramp: N(t) = 250 t^2 for t < 2, then 1000 (t - 1)
    s = Schedule(rate=1000, duration=10, ramp=2)
    assert s.cumulative(1.0) == 250.0
    assert s.cumulative(2.0) == 1000.0
    assert s.cumulative(3.0) == 2000.0
    assert s.rate_at(0.5) == 250.0 and s.rate_at(5) == 1000.0
    times = [t for _, t in s.due(INF)]
    assert len(times) == 9000  # N(10) = 1000 x (10 - 1)
    assert sum(1 for t in times if t < 1.0) == 250
    assert sum(1 for t in times if 1.0 <= t < 2.0) == 750
    assert sum(1 for t in times if 2.0 <= t < 3.0) == 1000
    # gaps shrink during the ramp and are exactly 1 ms afterwards
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[10] > gaps[100] > gaps[900]
    assert all(abs(g - 0.001) < 1e-9 for g in gaps[1000:])


def test_ramp_expected_matches_due() -> None:
    s = Schedule(rate=500, duration=4, ramp=3)
    times = [t for _, t in Schedule(rate=500, duration=4, ramp=3).due(INF)]
    for k in range(4):
        assert s.expected(k, k + 1) == sum(1 for t in times if k <= t < k + 1)


def test_poisson_mean_and_dispersion_with_fixed_seed() -> None:
    rate, duration = 1000.0, 20.0
    s = Schedule(rate, duration, arrival="poisson", seed=42)
    times = [t for _, t in s.due(INF)]
    n = len(times)
    # Poisson count: mean 20000, sd sqrt(20000) ~ 141; 4 sd bounds
    assert abs(n - 20000) < 4 * math.sqrt(20000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    assert abs(mean - 0.001) < 0.00005
    # exponential gaps: coefficient of variation 1 (uniform would give 0)
    assert abs(math.sqrt(var) / mean - 1.0) < 0.05
    # same seed, same schedule; another seed, another one
    again = [t for _, t in Schedule(rate, duration, arrival="poisson", seed=42).due(INF)]
    other = [t for _, t in Schedule(rate, duration, arrival="poisson", seed=43).due(INF)]
    assert again == times and other != times


def test_poisson_workers_superpose_to_the_rate() -> None:
    rate, duration, workers = 900.0, 20.0, 3
    total = 0
    seqs: set[int] = set()
    for i in range(workers):
        part = Schedule(rate, duration, arrival="poisson", seed=7, index=i, count=workers)
        got = part.due(INF)
        assert abs(part.expected(0, duration) - 6000) < 1e-6
        total += len(got)
        seqs.update(n for n, _ in got)
    assert abs(total - 18000) < 4 * math.sqrt(18000)
    assert len(seqs) == total  # sequence numbers are unique across workers


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0, "duration": 1}, {"rate": 1, "duration": 0}, {"rate": 1, "duration": 1,
                                                              "index": 2, "count": 2}],
)
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Schedule(**kwargs)  # type: ignore[arg-type]
