"""audit: each note follows the value in force and the plan (KERNEL.md §7)."""

from __future__ import annotations

from tcpchurn.diagnose.audit import audit
from tcpchurn.diagnose.forecast import Plan
from tcpchurn.kernel.sysctl import SysctlSnapshot, parse_sysctls

BASE = {
    "sys/net/ipv4/tcp_tw_reuse": "2\n",
    "sys/net/ipv4/tcp_timestamps": "1\n",
    "sys/net/ipv4/tcp_max_tw_buckets": "131072\n",
    "sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
    "sys/net/ipv4/tcp_fin_timeout": "60\n",
    "sys/net/ipv4/tcp_syncookies": "1\n",
    "sys/net/ipv4/tcp_max_syn_backlog": "2048\n",
    "sys/net/ipv4/tcp_orphan_retries": "0\n",
}


def notes(snap: SysctlSnapshot, plan: Plan) -> dict[str, str]:
    return {a.sysctl.rsplit(".", 1)[-1]: a.note for a in audit(snap, plan)}


def snap(**changes: str) -> SysctlSnapshot:
    files = dict(BASE)
    for key, value in changes.items():
        files[f"sys/net/ipv4/{key}"] = value
    return parse_sysctls(files)


def test_tw_reuse_note_follows_value_timestamps_and_plan() -> None:
    client = Plan(rate=1000, close="client")
    assert "ceiling is about 470/s" in notes(snap(tcp_tw_reuse="0\n"), client)["tcp_tw_reuse"]
    on = notes(snap(tcp_tw_reuse="1\n"), client)["tcp_tw_reuse"]
    assert on.startswith("on:") and "28,232/s" in on
    no_ts = notes(snap(tcp_tw_reuse="1\n", tcp_timestamps="0\n"), client)
    assert "tcp_timestamps, which are off here" in no_ts["tcp_tw_reuse"]
    assert "does nothing" in no_ts["tcp_timestamps"]
    loop = notes(snap(), Plan(rate=1000, close="client", loopback=True))["tcp_tw_reuse"]
    assert loop.startswith("loopback only") and "28,232/s" in loop


def test_tw_recycle_absent_on_this_kernel_present_on_an_old_one() -> None:
    assert audit(snap(), Plan(rate=1))[0].scope == "absent"
    old = notes(snap(tcp_tw_recycle="0\n"), Plan(rate=1))["tcp_tw_recycle"]
    assert "predates 4.12" in old


def test_tw_buckets_note_says_fits_or_overflows() -> None:
    # 10 sources: 141,160 4-tuples, so 3,000/s x 60 s = 180,000 is bounded at 141,160.
    big = notes(snap(), Plan(rate=3000, source_ips=10))["tcp_max_tw_buckets"]
    assert "= 141,160: overflows" in big
    assert "fits" in notes(snap(), Plan(rate=1000))["tcp_max_tw_buckets"]


def test_syn_backlog_matters_only_without_syncookies() -> None:
    assert "inactive" in notes(snap(), Plan(rate=1))["tcp_max_syn_backlog"]
    off = notes(snap(tcp_syncookies="0\n"), Plan(rate=1))["tcp_max_syn_backlog"]
    assert "3/4" in off


def test_absent_sysctl_carries_the_kernel_reason() -> None:
    entry = next(a for a in audit(snap(), Plan(rate=1)) if a.sysctl.endswith("reuse_delay"))
    assert (entry.value, entry.scope) == (None, "absent")
    assert "6.14" in entry.note
