"""tcpchurn doctor: JSON contract, audit of KERNEL.md §7, bad input, --apply/--revert."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

from tcpchurn.cli import main
from tcpchurn.diagnose.tuning import state_path
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls
from tests.conftest import sh

SECTION_7 = ["tcp_tw_recycle", "tcp_tw_reuse", "tcp_max_tw_buckets", "ip_local_port_range",
             "tcp_timestamps", "tcp_fin_timeout", "tcp_orphan_retries", "tcp_rfc1337",
             "tcp_max_orphans", "tcp_max_syn_backlog", "tcp_mem"]


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["doctor", *args])
    out = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


def test_json_follows_schema_section_6(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--rate", "1000", "--target", "198.18.0.2:80",
                          "--close", "client", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"plan", "forecast", "audit", "fixes"} <= set(data)
    assert data["plan"]["rate"] == 1000 and data["plan"]["close"] == "client"
    for row in data["forecast"]:
        assert {"limit", "capacity", "steady_state", "seconds_to_full", "max_sustainable_rate",
                "side"} <= set(row)
    ports = next(r for r in data["forecast"] if r["limit"] == "ephemeral_ports")
    host = read_sysctls(Procfs())
    low, high = host.get("ip_local_port_range")  # type: ignore[misc]
    assert ports["capacity"] == high - low + 1  # no reserved ports on the test machine
    assert {"sysctl", "nft"} <= set(data["fixes"])
    assert "tcp dport 80 notrack" in data["fixes"]["nft"]


def test_audit_says_something_about_every_section_7_sysctl(
        capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = doctor(capsys, "--rate", "1000", "--json")
    audit = {a["sysctl"].rsplit(".", 1)[-1]: a for a in json.loads(out)["audit"]}
    assert set(SECTION_7) <= set(audit)
    recycle = audit["tcp_tw_recycle"]
    assert (recycle["value"], recycle["scope"]) == (None, "absent")
    assert "4.12" in recycle["note"] and "4396e46187ca" in recycle["note"]
    assert "does NOT shorten TIME_WAIT" in audit["tcp_fin_timeout"]["note"]
    assert all(a["note"] for a in audit.values())


def test_emit_sysctl_writes_a_sysctl_d_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--rate", "1000", "--target", "198.18.0.2:80",
                          "--close", "client", "--emit", "sysctl")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("# sysctl.d")
    settings = [ln for ln in lines if ln and not ln.startswith("#")]
    assert all(" = " in ln for ln in settings)
    if read_sysctls(Procfs()).get("tcp_tw_reuse") != 1:
        assert "net.ipv4.tcp_tw_reuse = 1" in settings  # 28,232 ports fill in 28 s


def test_human_output_highlights_the_first_table_to_fill(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--rate", "1000", "--target", "198.18.0.2:80",
                          "--close", "client")
    assert code == 0
    assert "Forecast, table by table" in out and "tcp_tw_recycle" in out
    assert "fills first" in out or "No table fills" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "-5"], "-5"),
        (["--duration", "nan"], "--duration"),
        (["--target", "nohostport"], "nohostport"),
        (["--target", "1.2.3.4:99999"], "99999"),
        (["--source-ips", "0"], "--source-ips"),
        (["--close", "later"], "later"),
        (["--apply", "--revert"], "--apply/--revert"),
        (["--emit", "nft"], "--target"),
        (["--netns", "tcpchurn-t-absent"], "tcpchurn-t-absent"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                          needle: str) -> None:
    code, _, err = doctor(capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert "Traceback" not in err


@pytest.mark.root
def test_apply_then_revert_restores_the_namespace_exactly(
        make_netns: Callable[[], str], capsys: pytest.CaptureFixture[str]) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=1000", netns=ns)
    state = state_path(ns)
    host_before = read_sysctls(Procfs()).to_json()
    with Procfs(netns=ns) as p:
        before = read_sysctls(p).to_json()
    plan = ["--netns", ns, "--rate", "2000", "--close", "client", "--target", "198.18.0.2:80",
            "--source-ips", "4"]
    try:
        code, out, err = doctor(capsys, *plan, "--apply")
        assert code == 0, err
        with Procfs(netns=ns) as p:
            applied = read_sysctls(p).to_json()
        # ports: 28,232 fill in 14 s at 2,000/s -> reuse; tw: 1,000 fills at once ->
        # 2,000 x 60 x 1.25 = 150,000 -> 262,144.
        assert applied["net.ipv4.tcp_tw_reuse"] == 1
        assert applied["net.ipv4.tcp_max_tw_buckets"] == 262144
        changed = {k for k in before if before[k] != applied[k]}
        reported = {ln.split()[1].rstrip(":") for ln in out.splitlines()
                    if ln.startswith("applied: ")}
        # exactly what it said it changed; never conntrack's: nothing is tracked in this
        # fresh namespace, whatever the global nf_conntrack_max is at the moment
        assert changed == reported == {"net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_max_tw_buckets"}
        assert os.path.exists(state)
        code, _, err = doctor(capsys, *plan, "--apply")
        assert code == 2 and "--revert" in err  # never records tuned values as "previous"
        code, out, err = doctor(capsys, "--netns", ns, "--revert")
        assert code == 0, err
        assert "tcp_max_tw_buckets" in out
        with Procfs(netns=ns) as p:
            assert read_sysctls(p).to_json() == before
        assert not os.path.exists(state)
        assert read_sysctls(Procfs()).to_json() == host_before  # the host never changed
        code, _, err = doctor(capsys, "--netns", ns, "--revert")
        assert code == 2 and "nothing to revert" in err
    finally:
        if os.path.exists(state):
            os.unlink(state)


@pytest.mark.root
def test_netns_audit_reads_that_namespace(make_netns: Callable[[], str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ns = make_netns()
    sh("sysctl", "-qw", "net.ipv4.tcp_fin_timeout=33", netns=ns)
    _, out, _ = doctor(capsys, "--netns", ns, "--json")
    audit = {a["sysctl"]: a for a in json.loads(out)["audit"]}
    assert audit["net.ipv4.tcp_fin_timeout"]["value"] == 33
    assert json.loads(out)["where"] == f"netns {ns}"


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
def test_emit_nft_loads_in_nft_check_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--target", "[fd00:198:18::2]:8080", "--emit", "nft")
    assert code == 0
    check = subprocess.run(["nft", "-c", "-f", "-"], input=out, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stderr
