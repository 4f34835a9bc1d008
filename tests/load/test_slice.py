"""Workers ask the scheduler for a short slice (tcpchurn.load.slice), on the real kernel.

Each check runs in a child interpreter: the slice is an attribute of the calling
process, and the test runner's own must stay as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tcpchurn.load import slice as slice_mod
from tcpchurn.load.slice import WORKER_SLICE_NS, request_slice


def _kernel_at_least(major: int, minor: int) -> bool:
    nums = os.uname().release.split("-")[0].split(".")
    return (int(nums[0]), int(nums[1])) >= (major, minor)


def _child(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return out.split()


@pytest.mark.skipif(not _kernel_at_least(6, 12), reason="custom slices need Linux 6.12")
def test_a_worker_gets_the_slice_it_asks_for_and_keeps_its_nice_level() -> None:
    granted, nice, sched = _child("""
        import os
        from tcpchurn.load.slice import request_slice
        os.nice(3)
        granted = request_slice()
        slice_ns = next(line.split(":")[1].strip() for line in open("/proc/self/sched")
                        if line.startswith("se.slice"))
        print(granted, os.getpriority(os.PRIO_PROCESS, 0), slice_ns)
    """)
    # /proc/PID/sched is the kernel's own view of the entity's slice
    assert int(granted) == int(sched) == WORKER_SLICE_NS
    assert int(nice) == 3  # sched_setattr sets nice too: the request must keep it


def test_an_unknown_architecture_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slice_mod.platform, "machine", lambda: "sparc64")
    assert request_slice() is None
    assert slice_mod.current_slice_ns() is None


@pytest.mark.root
def test_a_realtime_process_keeps_its_policy() -> None:
    # SCHED_FIFO has no EEVDF slice: asking would silently switch the policy back
    policy, granted = _child("""
        import os
        from tcpchurn.load.slice import request_slice
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        granted = request_slice()
        print(os.sched_getscheduler(0), granted)
    """)
    assert int(policy) == os.SCHED_FIFO and granted == "None"
