"""Down-sample a series for plotting without hiding its spikes.

A plot 1,000 pixels wide cannot show more than ~1,000 points, but averaging would flatten
exactly what a report must show (a one-second burst of drops, a full queue). So each
bucket keeps its minimum and its maximum, in time order: the drawn envelope is the same
as with every point. Only the *plot* is down-sampled; the data files are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence


def minmax(ts: Sequence[float], vs: Sequence[float],
           max_points: int = 1000) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points of ``(ts, vs)``: the min and max of equal buckets.

    >>> minmax([0, 1, 2, 3, 4, 5], [5, 9, 1, 1, 7, 2], max_points=4)
    ([1, 2, 3, 4], [9, 1, 1, 7])
    """
    n = len(ts)
    if n != len(vs):
        raise ValueError(f"minmax: {n} times but {len(vs)} values")
    if max_points < 2:
        raise ValueError(f"minmax: max_points={max_points}, need at least 2")
    if n <= max_points:
        return list(ts), list(vs)
    buckets = max_points // 2
    out_t: list[float] = []
    out_v: list[float] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        i_min = min(range(lo, hi), key=vs.__getitem__)
        i_max = max(range(lo, hi), key=vs.__getitem__)
        for i in sorted({i_min, i_max}):
            out_t.append(ts[i])
            out_v.append(vs[i])
    return out_t, out_v
