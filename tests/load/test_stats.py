"""Stats: vectorised recording equals HdrHistogram's own, merge/encode/decode round trips,
percentiles of known inputs, and the exact JSON keys of docs/schema.md §2 and §4."""

from __future__ import annotations

import pickle
import random
from array import array

import numpy as np
import pytest

from tcpchurn.load.stats import (
    FEW,
    HIGHEST_US,
    HISTOGRAMS,
    MISSING,
    IntervalStats,
    Recorder,
    RunTotals,
    fill,
    fill_few,
    new_histogram,
    record_many,
    reset_histogram,
    values_at_percentiles,
)


def test_record_many_matches_record_value_bucket_for_bucket() -> None:
    rng = random.Random(1)
    values = [0, 1, 2, 2047, 2048, 2049, 4095, 4096, 10**6, 10**9, HIGHEST_US]
    values += [int(rng.lognormvariate(7, 3)) % HIGHEST_US for _ in range(20000)]
    fast, slow = new_histogram(), new_histogram()
    record_many(fast, np.array(values, dtype=np.int64))
    for v in values:
        slow.record_value(v)
    assert list(fast.counts) == list(slow.counts)
    assert fast.get_total_count() == slow.get_total_count() == len(values)
    assert (fast.get_min_value(), fast.get_max_value()) == (
        slow.get_min_value(), slow.get_max_value())


def interval_with(latencies_ms: list[float], index: int = 0) -> IntervalStats:
    """One interval where connection i was scheduled at i ms, started on time, connected
    after latencies_ms[i]/2, first byte and end after latencies_ms[i]."""
    rec = Recorder()
    for i, lat in enumerate(latencies_ms):
        t = i / 1000.0
        rec.attempted += 1
        rec.ok += 1
        rec.record(t, t, t + lat / 2000.0, t + lat / 1000.0, t + lat / 1000.0)
    return rec.flush(index, float(index), 1.0, float(len(latencies_ms)), 0)


def test_percentiles_of_known_inputs() -> None:
    st = interval_with([float(v) / 1000.0 for v in range(1, 1001)])  # 1..1000 us
    lat = st.to_json()["latency_ms"]["total"]
    # values below 2048 us are exact with 3 significant digits
    assert lat == {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999, "max": 1.0,
                   "count": 1000}
    assert st.to_json()["latency_ms"]["connect"]["p50"] == 0.25


PCTS = [0.0, 0.1, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]


@pytest.mark.parametrize("shape", ["lognormal", "few-distinct", "whole-range", "one-value"])
def test_percentiles_in_one_pass_are_hdrhs_value_for_value(shape: str) -> None:
    """values_at_percentiles (one cumulative sum) against hdrh's own walk, also after a
    trip through encode/decode (the parent's histograms) and on an empty histogram."""
    rng = random.Random(shape)
    for trial in range(40):
        n = rng.randint(1, 2000)
        values = {
            "lognormal": lambda: int(rng.lognormvariate(6, 2)),
            "few-distinct": lambda: rng.randint(0, 4),
            "whole-range": lambda: rng.randint(0, HIGHEST_US),
            "one-value": lambda: 123_456,
        }[shape]
        hist = new_histogram()
        for _ in range(n):
            hist.record_value(min(values(), HIGHEST_US))
        if trial % 2:
            wire = IntervalStats(0, 0.0, 1.0, {name: hist if name == "total" else new_histogram()
                                               for name in HISTOGRAMS}).encode()
            hist = IntervalStats.decode(wire).hists["total"]
        assert values_at_percentiles(hist, PCTS) == [hist.get_value_at_percentile(p)
                                                      for p in PCTS]
    empty = new_histogram()
    assert values_at_percentiles(empty, PCTS) == [empty.get_value_at_percentile(p)
                                                   for p in PCTS]


def test_latency_from_scheduled_and_actual_start() -> None:
    rec = Recorder()
    # scheduled at 0, started 0.3 ms late, connected 0.1 ms later, done 0.3 ms after start
    # (below 2.048 ms the histogram is exact to the microsecond)
    rec.record(0.0, 0.0003, 0.0004, 0.0005, 0.0006)
    rec.attempted, rec.ok, rec.late = 1, 1, 1
    js = rec.flush(0, 0.0, 1.0, 1.0, 0).to_json()
    assert js["latency_ms"]["connect"]["max"] == 0.4
    assert js["latency_ms"]["schedule_lag"]["max"] == 0.3
    assert js["latency_ms"]["total"]["max"] == 0.6
    assert js["latency_from_actual_start_ms"]["connect"]["max"] == 0.1
    assert js["latency_from_actual_start_ms"]["total"]["max"] == 0.3
    assert js["late"] == 1


def test_failures_count_by_name_with_first_time() -> None:
    rec = Recorder()
    rec.attempted = 3
    rec.error("ECONNREFUSED", 0.25)
    rec.error("ECONNREFUSED", 0.5)
    rec.error("ETIMEDOUT", 0.75)
    rec.record(0.0, 0.0, MISSING, MISSING, MISSING)
    st = rec.flush(0, 0.0, 1.0, 3.0, 0)
    js = st.to_json()
    assert js["failed"] == 3 and js["ok"] == 0
    assert js["errors"] == {"ECONNREFUSED": 2, "ETIMEDOUT": 1}
    assert js["first_error_s"] == {"ECONNREFUSED": 0.25, "ETIMEDOUT": 0.75}
    assert js["latency_ms"]["connect"] == {"p50": None, "p90": None, "p99": None,
                                           "p999": None, "max": None, "count": 0}
    # the recorder starts afresh: memory is one interval's worth
    assert len(rec.done) == 0 and rec.errors == {} and rec.attempted == 0


def test_interval_json_has_exactly_the_schema_keys() -> None:
    js = interval_with([1.0, 2.0]).to_json()
    assert set(js) == {
        "target_rate", "achieved_rate", "attempted", "ok", "failed", "late", "skipped",
        "taken_over", "inflight", "errors", "latency_ms", "latency_from_actual_start_ms",
        "first_error_s", "interval_s",
    }
    assert set(js["latency_ms"]) == {"connect", "ttfb", "total", "schedule_lag"}
    assert set(js["latency_ms"]["ttfb"]) == {"p50", "p90", "p99", "p999", "max", "count"}
    assert js["target_rate"] == 2.0 and js["achieved_rate"] == 2.0


def test_encode_decode_and_pickle_round_trip() -> None:
    st = interval_with([random.Random(3).uniform(0.1, 50) for _ in range(500)], index=4)
    st.errors, st.first_error_s, st.failed = {"EADDRNOTAVAIL": 2}, {"EADDRNOTAVAIL": 4.5}, 2
    st.skipped, st.late, st.inflight, st.taken_over = 5, 6, 7, 8
    back = IntervalStats.decode(st.encode())
    assert back.to_json() == st.to_json()
    assert (back.index, back.t0, back.length) == (4, 4.0, 1.0)
    assert pickle.loads(pickle.dumps(st)).to_json() == st.to_json()


def test_merge_adds_counts_histograms_and_keeps_first_errors() -> None:
    a = interval_with([1.0] * 100)
    b = interval_with([1.5] * 300)
    a.errors, a.first_error_s, a.failed = {"ECONNRESET": 1}, {"ECONNRESET": 0.9}, 1
    b.errors, b.first_error_s, b.failed = {"ECONNRESET": 2}, {"ECONNRESET": 0.2}, 2
    a.inflight, b.inflight = 3, 4
    a.taken_over, b.taken_over = 2, 5
    merged = a.merge(IntervalStats.decode(b.encode()))
    js = merged.to_json()
    assert js["attempted"] == 400 and js["ok"] == 400 and js["failed"] == 3
    assert js["target_rate"] == 400.0 and js["inflight"] == 7 and js["taken_over"] == 7
    assert js["errors"] == {"ECONNRESET": 3} and js["first_error_s"] == {"ECONNRESET": 0.2}
    assert js["latency_ms"]["total"]["count"] == 400
    assert js["latency_ms"]["total"]["p50"] == 1.5  # 300 of 400 values are 1.5 ms
    assert js["latency_ms"]["total"]["p50"] == 1.5
    assert js["latency_ms"]["ttfb"]["max"] == 1.5


def test_run_totals_summary_keys_and_rates() -> None:
    totals = RunTotals()
    for k in range(3):
        st = interval_with([1.0] * 1000, index=k)
        st.target = 1000.0
        totals.add(st)
    last = interval_with([2.0] * 250, index=3)
    last.length, last.target = 0.25, 250.0
    totals.add(last)
    js = totals.to_json()
    assert set(js) == {"target_rate", "achieved_rate", "connections", "errors",
                       "first_error_s", "latency_ms", "latency_from_actual_start_ms"}
    assert js["connections"] == {"attempted": 3250, "ok": 3250, "failed": 0, "late": 0,
                                 "skipped": 0, "taken_over": 0}
    assert js["target_rate"] == 1000.0 and js["achieved_rate"] == 1000.0
    assert set(js["latency_ms"]) == {"connect", "ttfb", "total", "schedule_lag"}
    assert set(js["latency_ms"]["total"]) == {"p50", "p90", "p99", "p999", "max"}
    assert js["latency_ms"]["total"]["max"] == 2.0
    assert set(js["latency_from_actual_start_ms"]) == {"connect", "ttfb", "total"}


@pytest.mark.parametrize("seconds", [0.2, 7200.0])
def test_out_of_range_values_are_clamped_not_lost(seconds: float) -> None:
    rec = Recorder()
    # 0.2: "before" its schedule (clock skew between workers) -> 0; 7200 s -> 1 hour
    rec.record(0.5, 0.5, seconds, seconds, seconds)
    st = rec.flush(0, 0.0, 1.0, 1.0, 0)
    assert st.hists["total"].get_total_count() == 1


def test_discarded_intervals_are_freed_at_once_not_by_the_cyclic_gc() -> None:
    """Memory flat with duration: each interval's histograms (~1.3 MB) must go as soon as
    the interval is dropped, whatever the cyclic collector's schedule."""
    import gc
    import weakref

    gc.disable()
    try:
        st = IntervalStats.decode(interval_with([1.0] * 10).encode())
        refs = [weakref.ref(h) for h in st.hists.values()]
        refs.append(weakref.ref(interval_with([1.0]).hists["total"]))
        del st
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


@pytest.mark.parametrize("values", [[3, 700, 2_000_000], [0], [1, HIGHEST_US]])
def test_reset_histogram_empties_like_hdrh_reset(values: list[int]) -> None:
    # it clears only up to the highest value's counter: the top one included
    ours, theirs = new_histogram(), new_histogram()
    for h in (ours, theirs):
        record_many(h, np.array(values, dtype=np.int64))
    reset_histogram(ours)
    theirs.reset()
    assert list(ours.counts) == list(theirs.counts) and not any(ours.counts)
    assert (ours.total_count, ours.min_value, ours.max_value) == (
        theirs.total_count, theirs.min_value, theirs.max_value)
    record_many(ours, np.array([5], dtype=np.int64))
    assert (ours.get_min_value(), ours.get_max_value(), ours.get_total_count()) == (5, 5, 1)


def test_recycled_histograms_carry_a_later_interval_and_nothing_of_the_last() -> None:
    rec = Recorder()
    rec.prefault()  # two sets from the start: the current one and a spare
    for i in range(100):
        rec.record(i / 1000, i / 1000, i / 1000 + 0.001, i / 1000 + 0.002, i / 1000 + 0.003)
    first = rec.flush(0, 0.0, 1.0, 100.0, 0)
    sent = first.encode()  # what a worker's emit does before it hands them back
    expected = first.to_json()["latency_ms"]["total"]
    reused = first.hists["total"]
    rec.recycle(first.hists)
    rec.record(1.0, 1.0, 1.0005, 1.0006, 1.0007)
    second = rec.flush(1, 1.0, 1.0, 1.0, 0)  # on the prefaulted spare
    for _ in range(2):
        rec.record(2.0, 2.0, 2.0005, 2.0006, 2.0009)
    third = rec.flush(2, 2.0, 1.0, 2.0, 0)
    assert third.hists["total"] is reused  # the same counters, not new pages
    assert third.hists["total"].get_total_count() == 2
    assert third.to_json()["latency_ms"]["total"]["max"] == 0.9
    assert second.hists["total"].get_total_count() == 1
    # what went out on the pipe was complete before the counters were reused
    back = IntervalStats.decode(sent).to_json()["latency_ms"]["total"]
    assert back == expected and back["count"] == 100
    # without recycle (run_local, tests), an interval keeps its own histograms for good
    fourth = rec.flush(3, 3.0, 1.0, 0.0, 0)
    fifth = rec.flush(4, 4.0, 1.0, 0.0, 0)
    assert len({id(st.hists["total"]) for st in (second, third, fourth, fifth)}) == 4


def test_a_small_fold_records_what_the_numpy_pass_would() -> None:
    """``fill_few`` (hdrh's record_value, for the C path's few handed-over rows) and
    ``fill`` (numpy) give the same histograms: rounding, MISSING steps, negative lag."""
    rng = random.Random(7)
    rows: list[float] = []
    for _ in range(FEW):
        sched = rng.uniform(0, 10)
        start = sched + rng.choice([rng.expovariate(2000), -1e-7, 2.5e-6])
        steps = [start + rng.expovariate(1000) * k for k in (1, 2, 3)]
        if rng.random() < 0.2:
            steps[rng.randrange(3)] = MISSING
        rows += [sched, start, *steps]
    few = {name: new_histogram() for name in HISTOGRAMS}
    fill_few(few, array("d", rows))
    many = {name: new_histogram() for name in HISTOGRAMS}
    fill(many, np.array(rows).reshape(-1, 5))
    for name in HISTOGRAMS:
        assert list(few[name].counts) == list(many[name].counts), name
        assert (few[name].total_count, few[name].min_value, few[name].max_value) == (
            many[name].total_count, many[name].min_value, many[name].max_value), name
