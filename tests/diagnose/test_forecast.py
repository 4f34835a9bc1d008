"""forecast: KERNEL.md's arithmetic, with its own figures."""

from __future__ import annotations

import pytest

from tcpchurn.diagnose.forecast import Plan, TableForecast, forecast, tuple_bound
from tcpchurn.diagnose.sysctls import Sysctls

DEFAULTS = {
    "nf_conntrack_max": 262144,
    "nf_conntrack_tcp_timeout_time_wait": 120,
    "nf_conntrack_tcp_timeout_close": 10,
    "ip_local_port_range": "32768\t60999",
    "tcp_tw_reuse": 2,
    "tcp_timestamps": 1,
    "tcp_max_tw_buckets": 131072,
    "tcp_max_orphans": 131072,
    "fs.file-max": 2466165,
}


def rows(plan: Plan, rlimit: tuple[int | None, int | None] = (1048576, 1048576),
         **overrides: object) -> dict[str, TableForecast]:
    sysctls = Sysctls({**DEFAULTS, **overrides})
    return {r.limit: r for r in forecast(plan, sysctls, rlimit, files_allocated=2000)}


def test_2009_conntrack_16384_at_1000_per_s_fills_in_16_4_s() -> None:
    # Two client addresses: 2 x 14,116 4-tuples > 16,384, so the bound does not save it.
    ct = rows(Plan(rate=1000, source_ips=2), nf_conntrack_max=16384)["conntrack_full"]
    assert ct.seconds_to_full == 16.4
    assert ct.max_sustainable_rate == 136.5  # 16,384 / 120
    assert ct.capacity == 16384
    assert ct.steady_state == 28232  # min(120,000, 4-tuples)


def test_one_client_address_is_bounded_by_its_4_tuples() -> None:
    # KERNEL.md §6: server closes first -> even ports only -> ~14,116 4-tuples < 16,384.
    plan = Plan(rate=1000)
    assert tuple_bound(plan, Sysctls(DEFAULTS)) == 14116
    ct = rows(plan, nf_conntrack_max=16384)["conntrack_full"]
    assert ct.seconds_to_full is None
    assert ct.steady_state == 14116
    assert "bound" in ct.why


def test_default_conntrack_sustains_2184_per_s() -> None:
    # 32 addresses x 14,116 4-tuples = 451,712 > 262,144: the table, not the bound, binds.
    ct = rows(Plan(rate=3000, source_ips=32))["conntrack_full"]
    assert ct.max_sustainable_rate == 2184.5  # 262,144 / 120
    assert ct.seconds_to_full == pytest.approx(262144 / 3000, abs=0.05)


def test_rst_close_holds_conntrack_10_s() -> None:
    ct = rows(Plan(rate=3000, close="reset", source_ips=32))["conntrack_full"]
    assert ct.max_sustainable_rate == 26214.4  # 12x the capacity of a clean close
    assert ct.seconds_to_full is None  # 3000 x 10 s = 30,000 < 262,144


def test_ephemeral_ports_28232_over_60_s_is_about_470_per_s() -> None:
    ports = rows(Plan(rate=1000, close="client", lifetime_s=0.0))["ephemeral_ports"]
    assert ports.max_sustainable_rate == 470.5  # 28,232 / 60
    assert ports.seconds_to_full == 28.2  # 28,232 / 1,000


def test_tw_reuse_lifts_the_port_ceiling_only_where_it_applies() -> None:
    plan = Plan(rate=1000, close="client", lifetime_s=0.0)
    assert rows(plan, tcp_tw_reuse=1)["ephemeral_ports"].max_sustainable_rate == 28232.0
    # 2 = loopback only: a remote target keeps the 60 s hold ...
    assert rows(plan, tcp_tw_reuse=2)["ephemeral_ports"].max_sustainable_rate == 470.5
    # ... and a loopback one reuses after tcp_tw_reuse_delay.
    loop = Plan(rate=1000, close="client", lifetime_s=0.0, loopback=True)
    assert rows(loop, tcp_tw_reuse=2)["ephemeral_ports"].seconds_to_full is None
    # Without timestamps tw_reuse cannot prove newness.
    assert rows(plan, tcp_tw_reuse=1, tcp_timestamps=0)["ephemeral_ports"] \
        .max_sustainable_rate == 470.5


def test_ports_do_not_fill_when_the_server_closes_first() -> None:
    assert rows(Plan(rate=5000))["ephemeral_ports"].seconds_to_full is None


def test_reserved_ports_and_more_tuples_change_the_capacity() -> None:
    plan = Plan(rate=1000, close="client", source_ips=2, dest_tuples=3)
    ports = rows(plan, ip_local_reserved_ports="40000-40231")["ephemeral_ports"]
    assert ports.capacity == (28232 - 232) * 6


def test_tw_buckets_131072_over_60_s_is_2184_per_s() -> None:
    # Ten client addresses: 141,160 4-tuples > 131,072, so the cap is what binds.
    tw = rows(Plan(rate=3000, source_ips=10))["tw_buckets"]
    assert tw.side == "server"  # the server closes first
    assert tw.max_sustainable_rate == 2184.5
    assert tw.seconds_to_full == pytest.approx(131072 / 3000, abs=0.05)
    assert rows(Plan(rate=3000, close="reset"))["tw_buckets"].steady_state == 0


def test_fds_fill_when_connections_outlive_the_soft_limit() -> None:
    fd = rows(Plan(rate=1000, lifetime_s=2.0), rlimit=(1024, 524288))["fd_process"]
    assert fd.capacity == 1024
    assert fd.seconds_to_full == 1.0  # 1,024 descriptors at 1,000/s
    assert fd.max_sustainable_rate == pytest.approx((1024 - 32) / 2.0, abs=0.1)


def test_rows_are_sorted_first_to_fill_first() -> None:
    out = forecast(Plan(rate=1000, close="client", source_ips=2),
                   Sysctls({**DEFAULTS, "nf_conntrack_max": 16384}))
    assert [r.limit for r in out[:2]] == ["conntrack_full", "ephemeral_ports"]
    assert all(r.seconds_to_full is None for r in out[2:])


def test_conntrack_absent_is_no_limit_and_says_why() -> None:
    by = {r.limit: r for r in forecast(Plan(rate=1000), Sysctls({}))}
    assert by["conntrack_full"].capacity is None
    assert "not loaded" in by["conntrack_full"].why
    assert by["conntrack_full"].seconds_to_full is None


def test_json_has_the_schema_keys() -> None:
    row = forecast(Plan(rate=1000), Sysctls(DEFAULTS))[0].to_json()
    assert {"limit", "side", "capacity", "steady_state", "seconds_to_full",
            "max_sustainable_rate", "why"} <= set(row)
