"""Per-interval load statistics: counts, errors by name, and latency HdrHistograms.

Three pieces, sans-IO (STYLE.md rules 1, 8, 9):

* :class:`Recorder` — the worker's hot-path sink.  The engine appends five timestamps
  per finished connection (one ``array.extend``, ~0.3 µs); when idle, and at the end of
  the interval, :meth:`Recorder.fold` turns them into histograms *vectorised* with numpy.
  Recording each value through ``HdrHistogram.record_value`` costs ~0.9 µs in pure Python
  (measured), times 7 histograms per connection: ~6 µs, a fifth of the whole per-connection
  budget at 30,000/s.  The batch costs ~0.05 µs per value.  Memory is at most one
  interval's rows, so it is flat with the run's duration.
* :class:`IntervalStats` — one interval of one worker or of the run; ``merge`` adds
  another worker's, ``encode``/``decode`` cross a process boundary (JSON with hdrh's
  compressed base64 histograms; pickling goes through the same bytes), ``to_json`` is
  exactly docs/schema.md §2.
* :class:`RunTotals` — the sum of every interval, for the summary (§4).

Latencies are recorded in microseconds (1 µs .. 1 hour, 3 significant digits) and shown
in milliseconds.  "From the scheduled start" (no coordinated omission) is the default
view; "from the actual start" is kept beside it so a lagging generator is visible.
"""

from __future__ import annotations

import json
import math
import sys
import weakref
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.ctypeslib  # now, not lazily: a worker out of descriptors (EMFILE) cannot import
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: connect() may take ~127 s before ETIMEDOUT
SIGNIFICANT = 3

#: histogram names measured from the scheduled start, then from the actual start
SCHEDULED = ("connect", "ttfb", "total", "schedule_lag")
ACTUAL = ("connect", "ttfb", "total")
HISTOGRAMS = (*SCHEDULED, *(f"{n}_actual" for n in ACTUAL))

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))

#: a connection counts as ``late`` when it started more than this after its schedule
LATE_S = 0.001

MISSING = -1.0  # a timestamp that never happened (no connect, no first byte, failed)


def _uncycled(hist: HdrHistogram) -> HdrHistogram:
    """Break hdrh's histogram <-> encoder reference cycle (``encoder.histogram``).

    With the cycle, every discarded histogram (188 KiB of counters) waits for the cyclic
    garbage collector, which counts objects, not bytes: RSS swung between 40 and 130 MB
    in a loop of 400 intervals.  The encoder is only ever used through its histogram, so a
    weak reference back is enough, and refcounting frees each one at once.
    """
    hist.encoder.histogram = weakref.proxy(hist)
    return hist


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds."""
    return _uncycled(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT))


def counts_and_layout(
    hists: dict[str, HdrHistogram],
) -> tuple[list[Any], int, int, int, int, int]:
    """What ``Pump.bind`` needs to write into ``hists`` itself: their ctypes counters in
    :data:`HISTOGRAMS` order, then hdrh's layout (the same for all seven, see
    :func:`new_histogram`) and :data:`HIGHEST_US`."""
    h = hists[HISTOGRAMS[0]]
    return ([hists[name].counts for name in HISTOGRAMS], h.unit_magnitude,
            h.sub_bucket_half_count_magnitude, h.sub_bucket_half_count, h.sub_bucket_mask,
            HIGHEST_US)


def reset_histogram(hist: HdrHistogram, whole: bool = False) -> None:
    """Empty ``hist`` for reuse, as ``HdrHistogram.reset`` does, in one memset.

    ``reset`` loops in Python over 23,552 counters (~2 ms); a fresh histogram instead
    costs its 188 KiB again in page faults on first use (46 per histogram, ~600 per
    interval for seven, ~6 ms of a worker's CPU on this VM, all at the interval's start).
    Only the counters up to the highest value recorded can be non-zero, so only those
    are cleared (``whole``: all of them, to touch every page before a run): all seven
    whole took 4.2 ms at each interval's end, a second after the pages were last
    touched (memory left alone that long is slow to touch again on this VM, ~20 us a
    page: docs/run.md).
    """
    counts = np.ctypeslib.as_array(hist.counts)
    if whole:
        counts[:] = 0
    elif hist.total_count:
        counts[: hist._counts_index_for(hist.max_value) + 1] = 0
    hist.total_count = 0
    hist.min_value = sys.maxsize
    hist.max_value = 0
    hist.start_time_stamp_msec = sys.maxsize
    hist.end_time_stamp_msec = 0


def record_many(hist: HdrHistogram, values_us: np.ndarray[Any, Any]) -> None:
    """Add integer microsecond values to ``hist`` in one vectorised pass.

    The index arithmetic is HdrHistogram's own (``_counts_index_for``); the test suite
    checks it against ``record_value`` value by value.
    """
    if values_us.size == 0:
        return
    v = np.clip(values_us.astype(np.int64), 0, HIGHEST_US)
    # bit length of (v | mask) == 64 - clz(v | mask); frexp is exact below 2**53
    pow2ceiling = np.frexp((v | hist.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = pow2ceiling - hist.unit_magnitude - (hist.sub_bucket_half_count_magnitude + 1)
    sub = v >> (bucket + hist.unit_magnitude)
    index = ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + sub
    index -= hist.sub_bucket_half_count
    counts = np.bincount(index, minlength=0)
    view = np.ctypeslib.as_array(hist.counts)
    view[: counts.size] += counts.astype(view.dtype)
    hist.total_count += int(v.size)
    hist.min_value = min(hist.min_value, int(v.min()))
    hist.max_value = max(hist.max_value, int(v.max()))


def values_at_percentiles(hist: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """``hist.get_value_at_percentile(p)`` for each of ``percentiles``, in one pass.

    hdrh walks the counters in Python, one percentile at a time: the four percentiles of
    an interval's seven histograms took ~4 ms, a burst of the parent's CPU at every
    interval's end that, on cores shared with the workers and the server, started the
    next interval's connections late (docs/run.md "Keeping the schedule").  Here one
    cumulative sum of the counters and a binary search per percentile, with hdrh's own
    target count and equivalent-value rounding (the test suite compares the two).
    """
    counts = np.ctypeslib.as_array(hist.counts)
    # no counter above the maximum's is non-zero: summing up to it is enough, when the
    # sum says so (else all of them, as hdrh would)
    top = hist.get_max_value()
    cum = np.cumsum(counts[:hist.get_counts_array_index(top) + 1], dtype=np.int64)
    if not len(cum) or cum[-1] != hist.get_total_count():
        cum = np.cumsum(counts, dtype=np.int64)
    out = []
    for pct in percentiles:
        target = hist.get_target_count_at_percentile(pct)
        index = int(np.searchsorted(cum, target, side="left"))  # first with cum >= target
        if index >= len(cum):
            out.append(0)  # hdrh's answer when the counters never reach it
            continue
        value = hist.get_value_from_index(index)
        out.append(hist.get_highest_equivalent_value(value) if pct
                   else hist.get_lowest_equivalent_value(value))
    return out


def _summary(hist: HdrHistogram, with_count: bool) -> dict[str, float | int | None]:
    total = hist.get_total_count()
    out: dict[str, float | int | None] = {}
    values = values_at_percentiles(hist, [pct for _, pct in PERCENTILES]) if total else []
    for i, (key, _) in enumerate(PERCENTILES):
        out[key] = round(values[i] / 1000.0, 3) if total else None
    out["max"] = round(hist.get_max_value() / 1000.0, 3) if total else None
    if with_count:
        out["count"] = total
    return out


class _Counts:
    """Counters and errors shared by :class:`IntervalStats` and :class:`RunTotals`."""

    target: float
    attempted: int
    ok: int
    failed: int
    late: int
    skipped: int
    #: connections this worker started for another that was held up (its vCPU stalled, or
    #: its CPU busy: engine.py's lanes); merged: how many started on time only thanks to that
    taken_over: int
    errors: dict[str, int]
    first_error_s: dict[str, float]
    hists: dict[str, HdrHistogram]

    def _init_counts(self, hists: dict[str, HdrHistogram] | None = None) -> None:
        self.target = 0.0
        self.attempted = self.ok = self.failed = self.late = self.skipped = 0
        self.taken_over = 0
        self.errors = {}
        self.first_error_s = {}
        # seven new histograms are 1.3 MB to allocate and fault in (~17 ms of a worker at
        # each interval's end, measured): none when the caller brings its own
        self.hists = hists if hists is not None else {n: new_histogram() for n in HISTOGRAMS}

    def _add_counts(self, other: _Counts) -> None:
        self.target += other.target
        self.attempted += other.attempted
        self.ok += other.ok
        self.failed += other.failed
        self.late += other.late
        self.skipped += other.skipped
        self.taken_over += other.taken_over
        for name, n in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + n
        for name, t in other.first_error_s.items():
            self.first_error_s[name] = min(t, self.first_error_s.get(name, math.inf))
        for name, hist in other.hists.items():
            if hist.get_total_count():
                self.hists[name].add(hist)

    def latency_ms(self, with_count: bool = True) -> dict[str, dict[str, float | int | None]]:
        """Percentiles from the scheduled start: ``{connect,ttfb,total,schedule_lag}``."""
        return {name: _summary(self.hists[name], with_count) for name in SCHEDULED}

    def latency_actual_ms(
        self, with_count: bool = True
    ) -> dict[str, dict[str, float | int | None]]:
        """Percentiles from the actual start: ``{connect,ttfb,total}``."""
        return {name: _summary(self.hists[f"{name}_actual"], with_count) for name in ACTUAL}


class IntervalStats(_Counts):
    """What the load did in one interval ``[t0, t0 + length)`` (seconds from the start).

    ``target`` is the number of connections the schedule asked for in the interval
    (so merged workers add up); ``inflight`` the connections still open at its end.
    """

    def __init__(self, index: int = 0, t0: float = 0.0, length: float = 1.0,
                 hists: dict[str, HdrHistogram] | None = None) -> None:
        self.index = index
        self.t0 = t0
        self.length = length
        self.inflight = 0
        self._init_counts(hists)

    def merge(self, other: IntervalStats) -> IntervalStats:
        """Add another worker's stats of the same interval into this one; return self."""
        self._add_counts(other)
        self.inflight += other.inflight
        self.length = max(self.length, other.length)
        return self

    def to_json(self) -> dict[str, Any]:
        """The load interval of docs/schema.md §2."""
        length = self.length if self.length > 0 else 1.0
        return {
            "target_rate": round(self.target / length, 3),
            "achieved_rate": round(self.attempted / length, 3),
            "attempted": self.attempted,
            "ok": self.ok,
            "failed": self.failed,
            "late": self.late,
            "skipped": self.skipped,
            "taken_over": self.taken_over,
            "inflight": self.inflight,
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": self.latency_ms(),
            "latency_from_actual_start_ms": self.latency_actual_ms(),
            "first_error_s": {k: round(v, 6) for k, v in sorted(self.first_error_s.items())},
            "interval_s": round(length, 6),
        }

    def encode(self) -> bytes:
        """Bytes for a pipe: scalars as JSON, histograms in hdrh's compressed form."""
        doc = {
            "index": self.index, "t0": self.t0, "length": self.length,
            "target": self.target, "attempted": self.attempted, "ok": self.ok,
            "failed": self.failed, "late": self.late, "skipped": self.skipped,
            "taken_over": self.taken_over, "inflight": self.inflight, "errors": self.errors,
            "first_error_s": self.first_error_s,
            "hists": {
                name: h.encode().decode("ascii")
                for name, h in self.hists.items() if h.get_total_count()
            },
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> IntervalStats:
        """The inverse of :meth:`encode`."""
        doc = json.loads(data)
        blobs = doc["hists"]  # the empty ones are not sent
        hists = {name: _uncycled(HdrHistogram.decode(blobs[name].encode("ascii")))
                 if name in blobs else new_histogram() for name in HISTOGRAMS}
        st = cls(int(doc["index"]), float(doc["t0"]), float(doc["length"]), hists)
        st.target = float(doc["target"])
        for key in ("attempted", "ok", "failed", "late", "skipped", "taken_over", "inflight"):
            setattr(st, key, int(doc[key]))
        st.errors = {str(k): int(v) for k, v in doc["errors"].items()}
        st.first_error_s = {str(k): float(v) for k, v in doc["first_error_s"].items()}
        return st

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (IntervalStats.decode, (self.encode(),))


class RunTotals(_Counts):
    """Every interval of a run added up: the load part of ``summary.json`` (§4)."""

    def __init__(self) -> None:
        self.duration = 0.0
        self.intervals = 0
        self._init_counts()

    def add(self, interval: IntervalStats) -> RunTotals:
        """Add one (already merged) interval; return self."""
        self._add_counts(interval)
        self.duration += interval.length
        self.intervals += 1
        return self

    def to_json(self) -> dict[str, Any]:
        """The summary keys of docs/schema.md §4 that the load produces."""
        duration = self.duration if self.duration > 0 else 1.0
        return {
            "target_rate": round(self.target / duration, 3),
            "achieved_rate": round(self.attempted / duration, 3),
            "connections": {
                "attempted": self.attempted, "ok": self.ok, "failed": self.failed,
                "late": self.late, "skipped": self.skipped, "taken_over": self.taken_over,
            },
            "errors": dict(sorted(self.errors.items())),
            "first_error_s": {k: round(v, 6) for k, v in sorted(self.first_error_s.items())},
            "latency_ms": self.latency_ms(with_count=False),
            "latency_from_actual_start_ms": self.latency_actual_ms(with_count=False),
        }


class Recorder:
    """The engine's per-worker sink for one interval at a time.

    The engine extends :attr:`done` directly with five floats per finished connection
    (``scheduled, started, connected, first_byte, ended``; :data:`MISSING` where a step
    never happened; ``ended`` only for successes) and bumps the counters.  :meth:`fold`
    moves what is pending into the interval's histograms (the engine calls it when idle,
    so no flush stalls the schedule: converting 20,000 rows at once took ~10 ms);
    :meth:`flush` returns the interval and starts the next.  Times are seconds from the
    run's start.  ``done`` is an ``array('d')``: numpy reads it without a copy.
    """

    __slots__ = ("_spare", "attempted", "done", "errors", "first_error_s", "hists", "late",
                 "ok", "skipped", "taken_over")

    def __init__(self) -> None:
        self.done = array("d")
        self.errors: dict[str, int] = {}
        self.first_error_s: dict[str, float] = {}
        self.hists = {name: new_histogram() for name in HISTOGRAMS}
        self._spare: dict[str, HdrHistogram] | None = None
        self.attempted = self.ok = self.late = self.skipped = self.taken_over = 0

    def recycle(self, hists: dict[str, HdrHistogram]) -> None:
        """Take back a flushed interval's histograms (their owner is done with them).

        The next :meth:`flush` starts its interval on these, emptied, instead of on new
        ones; a worker's emit encodes the interval onto its pipe before it returns, so
        two sets alternate for the whole run, their pages touched once (see
        :func:`reset_histogram`).
        """
        for hist in hists.values():
            reset_histogram(hist)
        self._spare = hists

    def prefault(self) -> None:
        """Touch both sets of histograms now, before the run's clock starts."""
        for hist in self.hists.values():
            reset_histogram(hist, whole=True)
        spare = {name: new_histogram() for name in HISTOGRAMS}
        for hist in spare.values():
            reset_histogram(hist, whole=True)
        self._spare = spare

    def record(self, sched: float, start: float, conn: float, ttfb: float, end: float) -> None:
        """One finished connection (what the engine inlines as ``done.extend``)."""
        self.done.extend((sched, start, conn, ttfb, end))

    def error(self, name: str, t: float) -> None:
        """Count one failure named ``name`` (docs/schema.md §7) at ``t``."""
        self.errors[name] = self.errors.get(name, 0) + 1
        if name not in self.first_error_s:
            self.first_error_s[name] = t

    def pending(self) -> int:
        """Connections recorded but not yet folded into the histograms."""
        return len(self.done) // 5

    def counted(self, added: list[tuple[int, int, int]]) -> None:
        """Account for values that the C path wrote into :attr:`hists`' counts itself
        (``Pump.bind``): each histogram's ``(count, min, max)`` of them, in
        :data:`HISTOGRAMS` order (none: nothing was bound)."""
        for name, (n, low, high) in zip(HISTOGRAMS, added):  # noqa: B905 (none: [])
            if n:
                hist = self.hists[name]
                hist.total_count += n
                hist.min_value = min(hist.min_value, low)
                hist.max_value = max(hist.max_value, high)

    def fold(self) -> None:
        """Move pending connections into this interval's histograms."""
        if self.done:
            done, self.done = self.done, array("d")
            if len(done) <= 5 * FEW:
                fill_few(self.hists, done)
            else:
                fill(self.hists, np.frombuffer(done, dtype=np.float64).reshape(-1, 5))

    def flush(
        self, index: int, t0: float, length: float, target: float, inflight: int
    ) -> IntervalStats:
        """Everything recorded since the last flush, as one :class:`IntervalStats`."""
        self.fold()
        st = IntervalStats(index, t0, length, self.hists)
        st.target = target
        st.inflight = inflight
        st.attempted, st.ok, st.late, st.skipped = self.attempted, self.ok, self.late, self.skipped
        st.taken_over = self.taken_over
        st.failed = sum(self.errors.values())
        st.errors = self.errors
        st.first_error_s = self.first_error_s
        spare, self._spare = self._spare, None
        self.hists = spare if spare is not None else {n: new_histogram() for n in HISTOGRAMS}
        self.errors = {}
        self.first_error_s = {}
        self.attempted = self.ok = self.late = self.skipped = self.taken_over = 0
        return st


def _us(seconds: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = np.rint(np.maximum(seconds, 0.0) * 1e6).astype(np.int64)
    return out


#: up to this many connections, :meth:`Recorder.fold` records value by value in Python
#: (~6 us a connection): numpy's code goes cold between the rare small folds of the C
#: path (the ~40 responses a second that it hands over when nginx's ``Date:`` changes),
#: and a cold numpy pass took 5-10 ms, a stall of the schedule (docs/run.md)
FEW = 64


def fill_few(hists: dict[str, HdrHistogram], done: array[float]) -> None:
    """:func:`fill` for a few rows (``done``: :attr:`Recorder.done`), with hdrh's own
    ``record_value`` and the same rounding (``round`` and ``np.rint`` both round half
    to even)."""
    def us(seconds: float) -> int:
        return min(round(max(seconds, 0.0) * 1e6), HIGHEST_US)

    lag = hists["schedule_lag"]
    steps = [(hists[name], hists[f"{name}_actual"]) for name in ACTUAL]
    for j in range(0, len(done), 5):
        sched, start = done[j], done[j + 1]
        lag.record_value(us(start - sched))
        for (from_sched, from_start), at in zip(steps, done[j + 2:j + 5], strict=True):
            if at >= 0.0:
                from_sched.record_value(us(at - sched))
                from_start.record_value(us(at - start))


def fill(hists: dict[str, HdrHistogram], rows: np.ndarray[Any, Any]) -> None:
    """Record ``rows`` (n x 5 timestamps, see :class:`Recorder`) into the histograms."""
    if rows.size == 0:
        return
    sched, start, conn, ttfb, end = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    record_many(hists["schedule_lag"], _us(start - sched))
    for name, col in (("connect", conn), ("ttfb", ttfb), ("total", end)):
        seen = col >= 0.0
        record_many(hists[name], _us(col[seen] - sched[seen]))
        record_many(hists[f"{name}_actual"], _us(col[seen] - start[seen]))
