"""tcpchurn watch: the view rendered from recorded samples, the loop on a fake clock."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tcpchurn.errors import BadValue
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.watcher import (
    WatchConfig,
    carry_forward,
    watch_samples,
    with_carried,
)
from tcpchurn.report.watchview import MARKER, closest_to_full, render_watch, watch_rows

# Recorded §1 samples (copied from tests/fixtures/runs/ so other fixtures may evolve).
SAMPLES = json.loads((Path(__file__).parent / "fixtures" / "watch" / "samples.json").read_text())
SYSCTLS = {"net.ipv4.tcp_max_tw_buckets": 131072, "net.ipv4.tcp_max_orphans": 131072}


def sample_of(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(SAMPLES[name]))  # a deep copy
    return data


def render(sample: dict[str, Any], sysctls: dict[str, Any] = SYSCTLS, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_watch(sample, sysctls))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def line_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


def full_conntrack_sample() -> dict[str, Any]:
    """A server sample of the 2009 story where conntrack is at its max."""
    sample = sample_of("conntrack_full_server")
    assert sample["conntrack"]["count"] >= sample["conntrack"]["max"]
    return sample


def test_full_conntrack_row_is_marked_and_its_drops_shown() -> None:
    sample = full_conntrack_sample()
    ct = sample["conntrack"]
    out = render(sample)
    row = line_of(out, "conntrack")
    assert row.lstrip().startswith(MARKER)
    assert f"{ct['count']:,}" in row and f"{ct['max']:,}" in row and "100.0%" in row
    drops = line_of(out, "conntrack drops/s")
    assert f"{ct['stat_delta']['drop'] / sample['interval']:,.0f}" in drops
    assert f"closest to full: conntrack at 100.0% of {ct['max']:,}" in out
    assert sum(MARKER in line for line in out.splitlines()) == 2  # the row and the footer


def test_time_wait_row_shows_families_and_v4mapped_against_tw_buckets() -> None:
    sample = full_conntrack_sample()
    sample["tcp"] = dict(sample["tcp"])
    sample["tcp"]["states_v4"] = dict.fromkeys(sample["tcp"]["states"], 0) | {"TIME_WAIT": 7}
    sample["tcp"]["states_v6"] = dict(sample["tcp"]["states"])
    row = line_of(render(sample), "TIME_WAIT")
    tw = sample["tcp"]["states"]["TIME_WAIT"]
    assert f"{tw:,}" in row and "131,072" in row
    assert f"{tw / 131072:.1%}" in row
    assert (
        "v4 7" in row
        and f"v6 {tw:,}" in row
        and f"v4-mapped {sample['tcp']['tw_v4mapped']:,}" in row
    )


def test_every_bounded_row_has_limit_and_share() -> None:
    for name in SAMPLES:
        rows = watch_rows(sample_of(name), SYSCTLS)
        bounded = [r for r in rows if r.limit is not None]
        assert {r.name for r in bounded} >= {"TIME_WAIT", "orphans", "fds system"}
        for r in bounded:
            assert r.share == (r.used / r.limit if r.used is not None else None)
        top = closest_to_full(rows)
        assert top is not None
        assert top.share == max(r.share for r in rows if r.share is not None)


def test_rates_are_per_second_of_the_sample_interval() -> None:
    sample = full_conntrack_sample()
    sample["interval"] = 0.5
    sample["counters_delta"] = {
        "TcpExt": {"ListenOverflows": 30, "ListenDrops": 31, "TCPTimeWaitOverflow": 4},
        "Tcp": {},
    }
    rows = {r.name: r for r in watch_rows(sample, SYSCTLS)}
    assert rows["listen overflows/s"].used == 60
    assert rows["listen drops/s"].used == 62
    assert rows["TIME_WAIT overflows/s"].used == 8
    assert all(rows[n].alarming for n in ("listen overflows/s", "TIME_WAIT overflows/s"))


def test_first_sample_has_no_rates_and_renders() -> None:
    first = sample_of("healthy_first")
    assert first["interval"] is None
    rows = {r.name: r for r in watch_rows(first, SYSCTLS)}
    assert rows["listen overflows/s"].used is None
    out = render(first)
    assert line_of(out, "listen overflows/s").split("│")[2].strip() == "-"
    assert "tcpchurn watch" in out and first["where"] in out


def test_no_conntrack_module_says_so() -> None:
    sample = sample_of("healthy_later")
    assert sample["conntrack"]["loaded"] is False
    assert "not loaded" in line_of(render(sample), "conntrack")


def test_listeners_and_destinations_rows() -> None:
    sample = sample_of("healthy_later")
    out = render(sample)
    q = sample["listen"][0]
    assert f"{q['queue']}" in line_of(out, f"accept queue {q['local']}")
    d = sample["destinations"][0]
    row = line_of(out, f"ports to {d['remote']}")
    assert f"{d['sockets']:,}" in row and f"{d['port_range']:,}" in row


# ------------------------------------------------------------ the loop, fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeSnap:
    def __init__(self, at: float, detail: bool) -> None:
        self.at = at
        self.detail = detail

    def to_json(self, earlier: FakeSnap | None) -> dict[str, Any]:
        return {
            "at": self.at,
            "detail": self.detail,
            "earlier": earlier.at if earlier is not None else None,
        }


def fake_take(clock: FakeClock, cost: list[float]) -> Any:
    def take(procfs: Procfs, *, detail: bool, states: bool, t0: float, clock: Any) -> FakeSnap:
        assert states is False  # per-state dumps only in full samples (detail)
        snap = FakeSnap(clock(), detail)
        clock_obj.now += cost.pop(0) if cost else 0.0
        return snap

    clock_obj = clock
    return take


def test_samples_are_on_absolute_ticks_without_drift() -> None:
    clock = FakeClock()
    take = fake_take(clock, [0.25, 0.25, 0.25, 0.25])
    got = list(
        watch_samples(
            Procfs.fixture("/nonexistent"),
            WatchConfig(1.0, count=4),
            clock=clock,
            sleep=clock.sleep,
            take=take,
        )
    )
    assert [s["at"] for s in got] == [100.0, 101.0, 102.0, 103.0]
    assert clock.sleeps == [0.75, 0.75, 0.75]
    assert [s["earlier"] for s in got] == [None, 100.0, 101.0, 102.0]


def test_missed_ticks_are_skipped_not_burst() -> None:
    clock = FakeClock()
    take = fake_take(clock, [2.5, 0.0, 0.0])  # the first sample takes 2.5 intervals
    got = list(
        watch_samples(
            Procfs.fixture("/nonexistent"),
            WatchConfig(1.0, count=3),
            clock=clock,
            sleep=clock.sleep,
            take=take,
        )
    )
    assert [s["at"] for s in got] == [100.0, 102.5, 103.0]


def test_full_dump_every_n_samples() -> None:
    clock = FakeClock()
    got = list(
        watch_samples(
            Procfs.fixture("/nonexistent"),
            WatchConfig(0.5, count=7, detail_every=3),
            clock=clock,
            sleep=clock.sleep,
            take=fake_take(clock, []),
        )
    )
    assert [s["detail"] for s in got] == [True, False, False, True, False, False, True]
    assert [s["at"] for s in got] == [100.0 + 0.5 * i for i in range(7)]


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"interval": 0}, "--interval"),
        ({"interval": -1.0}, "--interval"),
        ({"interval": float("nan")}, "--interval"),
        ({"count": 0}, "--count"),
        ({"detail_every": 0}, "--detail-every"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(BadValue, match=option):
        WatchConfig(**kwargs).check()


def test_carry_forward_keeps_current_time_wait_and_last_full_states() -> None:
    full = sample_of("healthy_later") | {"t": 3.0}
    full["tcp"] = dict(full["tcp"]) | {
        "states_v4": dict(full["tcp"]["states"]),
        "states_v6": dict.fromkeys(full["tcp"]["states"], 0),
        "tw_v4mapped": 0,
    }
    cheap = sample_of("healthy_later") | {"t": 5.0, "destinations": None}
    cheap["tcp"] = dict(cheap["tcp"]) | {
        "states": dict.fromkeys(full["tcp"]["states"]) | {"TIME_WAIT": 4321},
        "states_v4": None,
        "states_v6": None,
        "tw_v4mapped": None,
        "source": "sockstat",
    }
    view = carry_forward(cheap, full)
    assert view["tcp"]["states"]["TIME_WAIT"] == 4321
    assert view["tcp"]["states"]["ESTABLISHED"] == full["tcp"]["states"]["ESTABLISHED"]
    assert view["destinations"] == full["destinations"]
    assert view["states_t"] == 3.0
    assert "states from t=3.0s" in render(view)
    assert cheap["tcp"]["states_v4"] is None  # the JSON sample itself is untouched
    assert carry_forward(full, full)["states_t"] == 3.0


def test_with_carried_pairs_raw_samples_with_the_view() -> None:
    full = {
        "t": 0.0,
        "tcp": {
            "states": {"ESTABLISHED": 5, "TIME_WAIT": 1},
            "states_v4": {"ESTABLISHED": 5},
            "states_v6": {},
        },
    }
    cheap = {"t": 1.0, "tcp": {"states": {"ESTABLISHED": None, "TIME_WAIT": 9}, "states_v4": None}}
    pairs = list(with_carried([full, cheap]))
    assert [raw for raw, _ in pairs] == [full, cheap]
    assert pairs[1][1]["tcp"]["states"] == {"ESTABLISHED": 5, "TIME_WAIT": 9}
    assert pairs[1][1]["states_t"] == 0.0


@pytest.mark.parametrize("width", [72, 80, 100, 160])
def test_numbers_are_never_cut_only_the_detail(width: int) -> None:
    sample = full_conntrack_sample()
    out = render(sample, width=width)
    assert max(map(len, out.splitlines())) <= width
    row = line_of(out, "conntrack")
    ct = sample["conntrack"]
    assert f"{ct['count']:,}" in row and f"{ct['max']:,}" in row and "100.0%" in row
    assert "…" not in "".join(line.split("│")[3] for line in out.splitlines() if "│" in line)
