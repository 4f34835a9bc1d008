"""tuning: --apply records before it writes, rolls back on a refused value, reverts exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.diagnose.tuning import apply_sysctls, revert_sysctls, state_path
from tcpchurn.errors import UsageError
from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh


def test_state_path_names_the_namespace() -> None:
    assert state_path(None) == "/run/tcpchurn/doctor-host.json"
    assert state_path("tcpchurn-t-x", "/tmp/s") == "/tmp/s/doctor-tcpchurn-t-x.json"


def test_revert_without_state_says_so(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing to revert"):
        revert_sysctls(Procfs(), str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UsageError, match="previous"):
        revert_sysctls(Procfs(), str(bad))


@pytest.mark.root
def test_apply_records_then_reverts(make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    state = str(tmp_path / "state.json")
    with Procfs(netns=ns) as p:
        changes = apply_sysctls(p, {"net.ipv4.tcp_tw_reuse": "1",
                                    "net.ipv4.ip_local_port_range": "20000 60999",
                                    "net.ipv4.tcp_fin_timeout": "60"}, state)
        # unchanged values are neither written nor recorded
        assert [(c.name, c.before, c.after) for c in changes] == [
            ("net.ipv4.tcp_tw_reuse", "2", "1"),
            ("net.ipv4.ip_local_port_range", "32768 60999", "20000 60999")]
        record = json.loads(Path(state).read_text())
        assert record["previous"] == {"net.ipv4.tcp_tw_reuse": "2",
                                      "net.ipv4.ip_local_port_range": "32768 60999"}
        assert sh("sysctl", "-n", "net.ipv4.tcp_tw_reuse", netns=ns).strip() == "1"
        revert_sysctls(p, state)
    assert sh("sysctl", "-n", "net.ipv4.tcp_tw_reuse", netns=ns).strip() == "2"
    assert sh("sysctl", "-n", "net.ipv4.ip_local_port_range", netns=ns).split() == [
        "32768", "60999"]
    assert not Path(state).exists()


@pytest.mark.root
def test_a_refused_value_rolls_back_what_was_written(make_netns: Callable[[], str],
                                                     tmp_path: Path) -> None:
    ns = make_netns()
    state = str(tmp_path / "state.json")
    with Procfs(netns=ns) as p, pytest.raises(UsageError, match="tcp_tw_reuse"):
        # tcp_tw_reuse accepts 0..2: the kernel answers EINVAL after fin_timeout was set
        apply_sysctls(p, {"net.ipv4.tcp_fin_timeout": "30", "net.ipv4.tcp_tw_reuse": "7"},
                      state)
    assert sh("sysctl", "-n", "net.ipv4.tcp_fin_timeout", netns=ns).strip() == "60"
    assert not Path(state).exists()
