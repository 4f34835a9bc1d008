"""The sampling loop of ``tcpchurn watch``: a kernel sample every interval, on schedule.

Ticks are absolute (``t0 + k * interval``), so a slow sample does not push every later
one back (no drift), and ticks missed while a sample was slower than the interval are
skipped rather than taken in a burst.  The clock, the sleep and the snapshot function
are injected: tests drive the loop on a fake clock (STYLE.md rule 10).

Cost: a cheap sample (sockstat, counters, conntrack, softnet, fds, LISTEN-only
sock_diag) every interval; the full per-state dump by family and the per-destination
grouping walk the whole shared ehash (KERNEL.md §4: ~40-140 ms at 118k-224k TIME_WAIT),
so they run only every ``detail_every`` samples.  :func:`carry_forward` lets the live
view show the last full dump's numbers in between.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tcpchurn.errors import BadValue
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.snapshot import KernelSnapshot

Sample = dict[str, Any]


@dataclass(frozen=True)
class WatchConfig:
    """What ``tcpchurn watch`` was asked for (validated in :meth:`check`)."""

    interval: float = 1.0
    count: int | None = None  # None: until interrupted
    detail_every: int = 5  # a full per-state dump every N samples (the first is full)

    def check(self) -> WatchConfig:
        """Raise :class:`BadValue` naming the first wrong option; return ``self``."""
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise BadValue("--interval", self.interval, "give a number of seconds > 0, e.g. 1")
        if self.count is not None and self.count < 1:
            raise BadValue("--count", self.count, "give a number of samples >= 1")
        if self.detail_every < 1:
            raise BadValue(
                "--detail-every", self.detail_every, "give N >= 1 (1: a full dump every sample)"
            )
        return self


TakeFn = Callable[..., KernelSnapshot]


def watch_samples(
    procfs: Procfs,
    config: WatchConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    take: TakeFn = KernelSnapshot.take,
) -> Iterator[Sample]:
    """Yield one docs/schema.md §1 sample per tick, ``config.count`` times (or forever).

    Sample ``n`` (0-based) is a full dump when ``n % detail_every == 0``.
    """
    t0 = clock()
    earlier: KernelSnapshot | None = None
    tick = 0
    taken = 0
    while config.count is None or taken < config.count:
        due = t0 + tick * config.interval
        now = clock()
        if now < due:
            sleep(due - now)
        elif now - due >= config.interval:
            # Late by a whole interval or more: skip the missed ticks, sample now.
            tick = int((now - t0) // config.interval)
        snap = take(
            procfs, detail=taken % config.detail_every == 0, states=False, t0=t0, clock=clock
        )
        sample: Sample = snap.to_json(earlier)
        earlier = snap
        taken += 1
        tick += 1
        yield sample


def carry_forward(sample: Mapping[str, Any], last_full: Mapping[str, Any] | None) -> Sample:
    """``sample`` for the live view, with per-state and destination numbers taken from
    ``last_full`` (the latest full dump) where this sample did not dump them.

    TIME_WAIT stays this sample's own (sockstat counts it every interval).  The result
    gains ``"states_t"``: the ``t`` the carried numbers are from.  JSON output never
    goes through here: it reports exactly what each sample measured.
    """
    out: Sample = dict(sample)
    tcp = dict(out.get("tcp") or {})
    out["states_t"] = sample.get("t")
    if tcp.get("states_v4") is None and last_full is not None:
        full_tcp = last_full.get("tcp") or {}
        states = dict(full_tcp.get("states") or {})
        tw = (tcp.get("states") or {}).get("TIME_WAIT")
        if tw is not None:
            states["TIME_WAIT"] = tw
        tcp.update(
            states=states,
            states_v4=full_tcp.get("states_v4"),
            states_v6=full_tcp.get("states_v6"),
            tw_v4mapped=full_tcp.get("tw_v4mapped"),
        )
        out["tcp"] = tcp
        if out.get("destinations") is None:
            out["destinations"] = last_full.get("destinations")
        out["states_t"] = last_full.get("t")
    return out


def is_full(sample: Mapping[str, Any]) -> bool:
    """True for a sample with the full per-state dump (``tcp.states_v4`` present)."""
    return (sample.get("tcp") or {}).get("states_v4") is not None


def with_carried(samples: Iterable[Sample]) -> Iterator[tuple[Sample, Sample]]:
    """``(sample, view)`` pairs: ``view`` is :func:`carry_forward` of the last full one.

    The live view and the Prometheus exporter show ``view`` (a gauge must not vanish on
    the cheap samples in between); JSON lines write ``sample`` as measured.
    """
    last_full: Sample | None = None
    for sample in samples:
        if is_full(sample):
            last_full = sample
        yield sample, carry_forward(sample, last_full)
