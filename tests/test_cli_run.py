"""`tcpchurn run` as a user types it: bad input is one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcpchurn.cli.run import parse_duration
from tcpchurn.cli.run_config import parse_rate
from tcpchurn.errors import BadValue

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpchurn", "run", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ftp://127.0.0.1/"], "'ftp'"),
        (["http://127.0.0.1:99999/"], "99999"),
        (["http://127.0.0.1:http/"], "'http'"),
        (["127.0.0.1"], "give a port"),
        (["http://no-such-host.invalid/"], "no-such-host.invalid"),
        (["--rate", "0"], "--rate: '0'"),
        (["--rate", "-5"], "--rate: '-5'"),
        (["--rate", "lots"], "--rate: 'lots'"),
        (["--duration", "0"], "--duration: '0'"),
        (["--duration", "-1s"], "--duration: '-1s'"),
        (["--duration", "10 parsecs"], "--duration: '10 parsecs'"),
        (["--timeout", "0"], "--timeout: '0'"),
        (["--ramp", "20", "--duration", "10"], "--ramp"),
        (["--source-ip", "192.0.2.77"], "192.0.2.77"),
        (["--source-ip", "not-an-ip"], "not-an-ip"),
        (["--watch-netns", "tcpchurn-t-does-not-exist"], "tcpchurn-t-does-not-exist"),
        (["--watch-pid", "999999999"], "999999999"),
        (["--workers", "0"], "--workers"),
        (["--arrival", "bursty"], "bursty"),
        (["--prometheus", "70000"], "70000"),
        (["--watch-netns", "a", "--watch-pid", "1"], "--watch-pid: 1"),
        (["--watch-pid", "1", "--watch-remote", "http://127.0.0.1:1/"], "only one of"),
        (["--watch-remote", "ftp://x/"], "ftp://x/"),
        (["--max-inflight", "0"], "--max-inflight"),
        (["--interval", "0.001"], "--interval"),
        (["--workers", "300"], "--workers"),
        (["--detail-every", "0"], "--detail-every"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = _run(*args, "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert proc.stdout == ""
    # Nothing was started, so nothing was written.
    assert not (tmp_path / "out").exists()


def test_help_teaches_close_modes_and_source_ips() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    for needle in ("--close server", "--close client", "--close reset", "TIME_WAIT",
                   "EADDRNOTAVAIL", "--source-ip", "Examples:", "2m"):
        assert needle in proc.stdout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("10s", 10.0), ("2m", 120.0), ("1.5h", 5400.0), ("250ms", 0.25),
     (" 3 s ", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--duration", text) == seconds


def test_zero_ramp_is_allowed_but_zero_duration_is_not() -> None:
    assert parse_duration("--ramp", "0", allow_zero=True) == 0.0
    with pytest.raises(BadValue, match="--duration: '0s'"):
        parse_duration("--duration", "0s")


@pytest.mark.parametrize(("text", "rate"), [("1000", 1000.0), ("2.5", 2.5), ("5k", 5000.0)])
def test_rates(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "", "k"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(BadValue, match="--rate"):
        parse_rate(text)


def test_prometheus_port_in_use_is_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run("--prometheus", str(port), "--duration", "1", "--out", str(tmp_path / "o"),
                    "--quiet")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert f"--prometheus: {port}" in line and "pick a free port" in line
    assert not (tmp_path / "o").exists()


def test_unreachable_remote_exporter_is_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"http://127.0.0.1:{port}/metrics"
        proc = _run("--watch-remote", url, "--duration", "1", "--out", str(tmp_path / "o"),
                    "--quiet")
    assert proc.returncode == 3, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert url in line
    assert not (tmp_path / "o").exists()


def test_json_prints_the_summary_on_stdout(tmp_path: Path) -> None:
    import json

    proc = _run("--rate", "50", "--duration", "1", "--workers", "1", "--json", "--quiet",
                "--out", str(tmp_path))
    assert proc.returncode in (0, 1), proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "summary.json").read_text())
    assert printed["connections"]["attempted"] == 50


def test_default_out_dir_is_timestamped_under_cwd(tmp_path: Path) -> None:
    proc = _run("--rate", "20", "--duration", "1", "--workers", "1", "--quiet", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    (run_dir,) = (tmp_path / "tcpchurn-out").iterdir()
    assert (run_dir / "summary.json").exists() and (run_dir / "timeline.jsonl").exists()


def test_out_dir_of_an_earlier_run_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    proc = _run("--duration", "1", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert str(tmp_path) in line and "already holds a run" in line
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_out_dir_that_cannot_be_created_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = _run("--rate", "10", "--duration", "1", "--out", str(tmp_path / "file" / "run"),
                "--quiet")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "cannot write there" in line and "Traceback" not in proc.stderr
