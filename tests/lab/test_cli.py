"""`tcpchurn lab` as a user meets it: list, bad input, missing tools -- one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcpchurn.errors import NotPermitted
from tcpchurn.lab.runner import check_environment
from tcpchurn.lab.scenarios import SCENARIOS
from tcpchurn.lab.servers import ServerSpec


def _tcpchurn(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpchurn", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_list_names_every_scenario_and_its_limit() -> None:
    out = _tcpchurn("lab", "list")
    assert out.returncode == 0
    for s in SCENARIOS:
        assert s.name in out.stdout
        assert (s.expected or "(none)") in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["lab", "run", "seed-2010"], "'seed-2010' is not valid: choose one of: seed-2009"),
        (["lab", "run", "healthy", "--rate", "fast"], "--rate: 'fast' is not valid"),
        (["lab", "run", "healthy", "--duration", "-3"], "--duration: '-3' is not valid"),
        (["lab", "run", "healthy", "--server", "iis"], "'iis' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    out = _tcpchurn(*args)
    assert out.returncode == 2
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_missing_tool_names_the_install_command(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    env = {**os.environ, "PATH": str(tmp_path)}  # no nft, no ip, no apache2
    out = _tcpchurn("lab", "run", "seed-2009", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "tcpchurn: error: nft is not installed: run `apt-get install nftables`")
    for tool in ("nft", "ip"):
        (tmp_path / tool).symlink_to(f"/usr/sbin/{tool}")
    out = _tcpchurn("lab", "run", "seed-2009", env=env)
    assert out.stderr.strip() == (
        "tcpchurn: error: apache2 is not installed: run `apt-get install apache2`")


def test_not_root_is_refused_before_anything_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotPermitted, match="run it as root"):
        check_environment(ServerSpec("nginx"))
