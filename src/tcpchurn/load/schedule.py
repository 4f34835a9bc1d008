"""When each connection is due: a pure function of rate, ramp, arrival law and the clock.

Sans-IO (STYLE.md rule 1): nothing here reads a clock or touches a socket; the engine
asks "what is due at ``now``?" and tests ask the same question with made-up times.

The run is one global sequence of connections ``n = 0, 1, 2, ...``.  Their cumulative
count at time ``t`` (seconds since the common start) is

* ``N(t) = R t² / (2 a)`` while ramping (``t < a``, linear rise of the rate from 0 to R),
* ``N(t) = R (t - a/2)`` afterwards,

and the *uniform* law schedules connection ``n`` at ``N⁻¹(n)``: the first at ``t = 0``,
then exactly every ``1/R`` s once the ramp is over.  Worker ``i`` of ``k`` takes
``n ≡ i (mod k)``, so the workers interleave and their union is the whole schedule, with
no rounding of the per-worker rate (``R/k`` need not be an integer).

The *poisson* law draws, per worker, independent exponential gaps in the count domain
(mean ``k``) and maps them through ``N⁻¹``; a superposition of independent Poisson
processes is a Poisson process of the summed intensity, so the run as a whole has mean
rate ``R`` (and follows the ramp) without the workers coordinating.  Sequence numbers stay
``i + j k`` so they are unique across workers.
"""

from __future__ import annotations

import math
import random

from tcpchurn.load.config import Arrival

INF = math.inf


class Schedule:
    """The due connections of one worker.

    >>> s = Schedule(rate=4, duration=1)
    >>> s.due(0.5)
    [(0, 0.0), (1, 0.25), (2, 0.5)]
    >>> s.due(10.0)
    [(3, 0.75)]
    """

    __slots__ = (
        "_a", "_gap", "_j", "_rng", "_u", "arrival", "count", "duration", "index",
        "next_seq", "next_time", "ramp", "rate",
    )

    def __init__(
        self,
        rate: float,
        duration: float,
        ramp: float = 0.0,
        arrival: Arrival = "uniform",
        seed: int | None = None,
        index: int = 0,
        count: int = 1,
    ) -> None:
        if rate <= 0 or duration <= 0 or ramp < 0 or not 0 <= index < count:
            raise ValueError(f"bad schedule {rate=} {duration=} {ramp=} {index=} {count=}")
        self.rate = float(rate)
        self.duration = float(duration)
        self.ramp = float(ramp)
        self.arrival: Arrival = arrival
        self.index = index
        self.count = count
        self._a = self.rate * self.ramp / 2.0  # N(ramp): connections made while ramping
        self._rng = random.Random(f"{seed}/{index}" if seed is not None else None)
        self._gap = float(count)  # mean gap of this worker in the count domain
        self._j = 0
        self._u = 0.0
        self.next_seq = index
        self.next_time = 0.0
        if arrival == "poisson":
            self._u = self._rng.expovariate(1.0 / self._gap)
            self.next_time = self.time_of(self._u)
        else:
            self.next_time = self.time_of(index)
        if self.next_time >= self.duration:
            self.next_time = INF

    # -- the pure arithmetic ---------------------------------------------------------

    def cumulative(self, t: float) -> float:
        """``N(t)``: how many connections the whole run should have started by ``t``."""
        if t <= 0:
            return 0.0
        t = min(t, self.duration)
        if t < self.ramp:
            return self.rate * t * t / (2.0 * self.ramp)
        return self.rate * (t - self.ramp / 2.0)

    def time_of(self, n: float) -> float:
        """``N⁻¹(n)``: when the ``n``-th connection of the run (from 0) is due."""
        if n < self._a:
            return math.sqrt(2.0 * self.ramp * n / self.rate)
        return n / self.rate + self.ramp / 2.0

    def rate_at(self, t: float) -> float:
        """The instantaneous target rate of the whole run at ``t``."""
        if t < 0 or t >= self.duration:
            return 0.0
        return self.rate * t / self.ramp if t < self.ramp else self.rate

    def _started_before(self, t: float) -> int:
        """How many of the run's uniform sequence numbers are due strictly before ``t``.

        Computed from ``time_of`` itself (not from ``cumulative``), so the counts agree
        with what :meth:`due` hands out even where floating point rounds.
        """
        t = min(t, self.duration)
        if t <= 0:
            return 0
        m = max(0, math.ceil(self.cumulative(t)))
        while m > 0 and self.time_of(m - 1) >= t:
            m -= 1
        while self.time_of(m) < t:
            m += 1
        return m

    def expected(self, t0: float, t1: float) -> float:
        """This worker's share of the connections due in ``[t0, t1)``.

        Exact (an integer) for the uniform law; the mean for the Poisson law.
        """
        if self.arrival == "poisson":
            return (self.cumulative(t1) - self.cumulative(t0)) / self.count
        k, i = self.count, self.index

        def mine(m: int) -> int:  # sequence numbers < m with n ≡ i (mod k)
            return max(0, (m - i + k - 1) // k)

        return float(mine(self._started_before(t1)) - mine(self._started_before(t0)))

    def expected_total(self, t0: float, t1: float) -> float:
        """What the whole run (all workers) should start in ``[t0, t1)``."""
        if self.arrival == "poisson":
            return self.cumulative(t1) - self.cumulative(t0)
        return float(self._started_before(t1) - self._started_before(t0))

    # -- consuming the schedule ------------------------------------------------------

    def advance(self) -> float:
        """Drop the current connection (started or skipped); return the next due time.

        Returns ``inf`` once the schedule has nothing left before ``duration``.
        """
        self._j += 1
        self.next_seq = self.index + self._j * self.count
        if self.arrival == "poisson":
            self._u += self._rng.expovariate(1.0 / self._gap)
            t = self.time_of(self._u)
        else:
            n = self.next_seq
            # time_of(n) inlined for the steady state (the engine's per-connection path)
            t = n / self.rate + self.ramp / 2.0 if n >= self._a else self.time_of(n)
        self.next_time = t if t < self.duration else INF
        return self.next_time

    def due(self, now: float, limit: int | None = None) -> list[tuple[int, float]]:
        """Pop every connection due at or before ``now``: ``[(seq, scheduled_time)]``."""
        out: list[tuple[int, float]] = []
        now = min(now, self.duration)  # due(inf) means "everything left"
        while self.next_time <= now and (limit is None or len(out) < limit):
            out.append((self.next_seq, self.next_time))
            self.advance()
        return out

    @property
    def finished(self) -> bool:
        """True once every connection of this worker has been handed out."""
        return self.next_time == INF
