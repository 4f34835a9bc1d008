"""What the engine does to its own process: the descriptor table grown before the start;
and numpy's BLAS kept from starting threads in the command's own process.

Each case runs in a fresh interpreter: pytest's own table is already large."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tcpchurn.load.process import BLAS_THREAD_VARS, RESERVE_FDS_MAX, reserve_fds

PROBE = textwrap.dedent("""
    import json, os, resource, sys
    from tcpchurn.load import process

    def fdsize():
        with open("/proc/self/status") as f:
            return int(next(ln.split()[1] for ln in f if ln.startswith("FDSize:")))

    count, soft, held, cap = (int(a) for a in sys.argv[1:])
    if soft:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if held:
        os.dup2(os.open(os.devnull, os.O_RDONLY), held)
    if cap:
        process.RESERVE_FDS_MAX = cap
    before, fds = fdsize(), sorted(map(int, os.listdir("/proc/self/fd")))
    got = process.reserve_fds(count)
    null = os.stat(os.devnull)
    print(json.dumps({"before": before, "got": got, "after": fdsize(), "fds": fds,
                      "fds_after": sorted(map(int, os.listdir("/proc/self/fd"))),
                      "held_is_null": bool(held) and os.path.samestat(os.fstat(held), null)}))
""")


def probe(count: int, soft: int = 0, held: int = 0, cap: int = 0) -> dict[str, object]:
    argv = [sys.executable, "-c", PROBE, str(count), str(soft), str(held), str(cap)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_table_is_grown_for_the_count_and_nothing_stays_open() -> None:
    r = probe(5000)
    assert isinstance(r["before"], int) and r["before"] < 5000  # 256 after python's start
    assert r["got"] == 5000
    assert isinstance(r["after"], int) and r["after"] >= 5000
    # the descriptor listing itself is open while /proc/self/fd is read: compare sets
    assert r["fds_after"] == r["fds"]


def test_the_soft_limit_caps_it() -> None:
    r = probe(5000, soft=700)
    assert r["got"] == 700
    assert isinstance(r["after"], int) and 700 <= r["after"] < 5000


def test_an_open_descriptor_at_the_top_is_left_alone() -> None:
    # F_DUPFD takes the lowest free number at or above the one asked: 999 is taken, so
    # the table grows to hold 1,000, and 999 still refers to what it did
    r = probe(1000, held=999)
    assert r["held_is_null"] is True
    assert 999 in r["fds_after"]  # type: ignore[operator]
    assert isinstance(r["after"], int) and r["after"] >= 1001


@pytest.mark.parametrize("count", [0, 10, 64])
def test_nothing_to_do_within_the_table_every_process_has(count: int) -> None:
    assert reserve_fds(count) == 0


def test_the_cap_bounds_the_memory() -> None:
    assert RESERVE_FDS_MAX == 1 << 17  # 1 MiB of pointers
    r = probe(5000, cap=2000)
    assert r["got"] == 2000
    assert isinstance(r["after"], int) and 2000 <= r["after"] < 5000


THREADS_AFTER_NUMPY = textwrap.dedent("""
    import os, sys
    if sys.argv[1] == "cli":
        from tcpchurn.cli import main
        try:
            main(["--version"])
        except SystemExit:
            pass
    import numpy
    numpy.ones((64, 64)) @ numpy.ones((64, 64))  # a BLAS call
    print(len(os.listdir("/proc/self/task")))
""")


def test_the_command_keeps_numpys_blas_to_one_thread() -> None:
    """``tcpchurn``'s own process (the sampler, the timeline, the dashboard) shares the
    cores with the load: numpy's BLAS must not start threads that spin there."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARS}

    def threads(how: str) -> int:
        out = subprocess.run([sys.executable, "-c", THREADS_AFTER_NUMPY, how], env=env,
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1])  # after `tcpchurn, version ...`

    plain = threads("plain")
    if plain == 1:
        pytest.skip("numpy's BLAS starts no threads of its own here (one CPU, or no OpenBLAS)")
    assert threads("cli") == 1
