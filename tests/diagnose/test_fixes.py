"""fixes: every limit has one, sized for the run, and the nft ruleset loads in nft."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tcpchurn.diagnose.fixes import (
    Fix,
    FixContext,
    fix_for,
    nft_notrack_ruleset,
    pow2_at_least,
    sysctl_d_text,
)
from tcpchurn.diagnose.rules import LIMIT_IDS


@pytest.mark.parametrize("limit", LIMIT_IDS)
def test_every_limit_has_a_fix_with_lines(limit: str) -> None:
    fix = fix_for(limit, {"rate": 1000, "port": 80})
    assert fix.limit == limit
    assert fix.lines() and fix.lines()[0] == fix.summary
    assert set(fix.to_json()) == {"limit", "summary", "sysctls", "nft", "socket", "server",
                                  "steps"}


def test_unknown_limit_names_itself() -> None:
    with pytest.raises(KeyError, match="no_such_limit"):
        fix_for("no_such_limit")


def test_conntrack_fix_sizes_max_and_buckets_together_on_the_host() -> None:
    fix = fix_for("conntrack_full", FixContext(rate=2000, port=80, side="server"))
    # 2,000/s x 120 s x 1.25 = 300,000 -> next power of two
    assert fix.sysctls == {"server": {"net.netfilter.nf_conntrack_max": "524288",
                                      "net.netfilter.nf_conntrack_buckets": "524288"}}
    assert fix.nft is not None and "tcp sport 80 notrack" in fix.nft


def test_conntrack_fix_in_a_namespace_lowers_the_timeout_instead() -> None:
    # nf_conntrack_max is read-only outside the init netns (KERNEL.md §2).
    ctx = {"rate": 1000, "init_netns": False, "side": "server",
           "sysctls": {"nf_conntrack_max": 16384}}
    fix = fix_for("conntrack_full", ctx)
    assert fix.sysctls == {"server": {"net.netfilter.nf_conntrack_tcp_timeout_time_wait": "13"}}


def test_ephemeral_fix_turns_on_reuse_only_where_it_is_off() -> None:
    remote = fix_for("ephemeral_ports", {"rate": 1000, "sysctls": {"tcp_tw_reuse": 2}})
    assert remote.sysctls == {"client": {"net.ipv4.tcp_tw_reuse": "1"}}
    loop = fix_for("ephemeral_ports", {"rate": 1000, "loopback": True,
                                       "sysctls": {"tcp_tw_reuse": 2}})
    assert loop.sysctls == {}


def test_accept_queue_fix_has_apache_and_nginx_lines() -> None:
    fix = fix_for("accept_queue", {"rate": 20000, "port": 8080,
                                   "sysctls": {"somaxconn": 4096}})
    assert fix.server == {"apache": "ListenBacklog 32768",
                          "nginx": "listen 8080 backlog=32768;"}
    assert fix.sysctls == {"server": {"net.core.somaxconn": "32768"}}


def test_tw_fix_raises_never_lowers() -> None:
    assert fix_for("tw_buckets", {"rate": 100, "sysctls": {"tcp_max_tw_buckets": 131072}}) \
        .sysctls == {}
    fix = fix_for("tw_buckets", {"rate": 4000, "side": "server",
                                 "sysctls": {"tcp_max_tw_buckets": 131072}})
    assert fix.sysctls == {"server": {"net.ipv4.tcp_max_tw_buckets": "524288"}}


def test_sysctl_d_text_lists_each_setting_once_with_its_limit() -> None:
    fixes = [Fix("a", "first", {"client": {"x.y": "1"}}), Fix("b", "second",
                                                              {"client": {"x.y": "2", "x.z": "3"}})]
    text = sysctl_d_text(fixes, "client", "header")
    assert text.splitlines() == ["# header", "# a: first", "x.y = 1", "# b: second", "x.z = 3"]
    assert "nothing to change" in sysctl_d_text([], "client", "h")


def test_pow2() -> None:
    assert [pow2_at_least(n) for n in (1, 2, 3, 4096, 4097)] == [1, 2, 4, 4096, 8192]


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
@pytest.mark.parametrize("port", [80, 8080, 65535])
def test_nft_ruleset_passes_nft_check_mode(port: int) -> None:
    ruleset = nft_notrack_ruleset(port)
    # -c: parse and validate against the kernel without committing anything.
    out = subprocess.run(["nft", "-c", "-f", "-"], input=ruleset, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    for rule in (f"tcp dport {port} notrack", f"tcp sport {port} notrack"):
        assert ruleset.count(rule) == 2  # prerouting and output: both directions
