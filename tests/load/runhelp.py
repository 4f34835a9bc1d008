"""Helpers for the end-to-end ``tcpchurn run`` tests: run it as users do, in a subprocess.

Every run here is bounded in rate, duration and ``--timeout`` and aims only at loopback
or at an address inside a namespace the test created.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Finished:
    """A finished ``tcpchurn run``: exit code, streams, and the two files it wrote."""

    rc: int
    stdout: str
    stderr: str
    out: Path

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return data

    @property
    def timeline(self) -> list[dict[str, Any]]:
        text = (self.out / "timeline.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


def tcpchurn_argv(*args: str, netns: str | None = None) -> list[str]:
    """``python -m tcpchurn ...``, inside ``netns`` when given."""
    argv = [sys.executable, "-m", "tcpchurn", *args]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _limit_nofile(n: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def run_tcpchurn(
    out: Path,
    *args: str,
    netns: str | None = None,
    nofile: int | None = None,
    timeout: float = 60.0,
) -> Finished:
    """Run ``tcpchurn run ARGS --out OUT --quiet`` to completion."""
    argv = tcpchurn_argv("run", *args, "--out", str(out), "--quiet", netns=netns)
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=_limit_nofile(nofile) if nofile is not None else None,
    )
    return Finished(proc.returncode, proc.stdout, proc.stderr, out)


@contextlib.contextmanager
def misbehaving(
    mode: str,
    host: str = "127.0.0.1",
    netns: str | None = None,
    port: int = 0,
    peers: list[str] | None = None,
) -> Iterator[int]:
    """Start ``tests/load/misbehaving.py`` in ``mode``; yield its port; stop it after.

    ``peers``, when given, receives the client addresses the server saw (after the end).
    """
    argv = [sys.executable, "-m", "tests.load.misbehaving", mode, host, str(port)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"server did not start: {line!r}"
        yield int(line.split()[1])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        last = proc.stdout.read() if proc.stdout is not None else ""
        if peers is not None and last.startswith("peers"):
            peers.extend(a for a in last.removeprefix("peers").strip().split(",") if a)


def consistent(summary: dict[str, Any], timeline: Sequence[dict[str, Any]]) -> None:
    """The summary's counts are the sums of the timeline's, and errors add up to failed."""
    conns = summary["connections"]
    for key in ("attempted", "ok", "failed"):
        assert conns[key] == sum(line["load"][key] for line in timeline), key
    assert conns["attempted"] == conns["ok"] + conns["failed"]
    assert sum(summary["errors"].values()) == conns["failed"]
    assert set(summary["first_error_s"]) == set(summary["errors"])

