"""Ask the scheduler for a short time slice, so a worker runs when its timer fires.

Schedule lag is the time between a connection's due time and its start.  On a machine
the generator shares with the server (two cores: nginx and our workers all runnable),
a worker woken by its timer used to wait for the running task's slice to end: EEVDF
lets the current task run to its deadline (``RUN_TO_PARITY``), 0.75-3 ms, so lag p99
was 2-36 ms at 80% of the ceiling (bench/ceiling.py).

Since Linux 6.12 a SCHED_OTHER task may request its own slice through
``sched_attr.sched_runtime`` (Peter Zijlstra's "sched/eevdf: Use sched_attr::sched_runtime
to set request/slice suggestion"), clamped to 0.1-100 ms, and a task with a shorter slice
may preempt on wake-up ("sched/eevdf: Allow shorter slices to wakeup-preempt").  Its
weight (nice) is unchanged: the worker gets the CPU sooner, not more of it.  Older
kernels ignore ``sched_runtime`` for SCHED_OTHER, which :func:`request_slice` reports as
``None``.

Python's ``os`` module has ``sched_setscheduler`` but not ``sched_setattr``, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from tcpchurn.libc import libc

#: the slice workers ask for: the kernel's minimum (kernel/sched/syscalls.c clamps a
#: request to [0.1 ms, 100 ms])
WORKER_SLICE_NS = 100_000

#: syscall numbers (arch/*/entry/syscalls): sched_setattr, sched_getattr
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275)}
#: struct sched_attr up to util_max (SCHED_ATTR_SIZE_VER1, include/uapi/linux/sched/types.h)
_ATTR = struct.Struct("=IIQiIQQQII")
SCHED_OTHER = 0


def current_slice_ns() -> int | None:
    """This process's requested slice (``sched_runtime``), ``None`` when unknown."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None
    buf = ctypes.create_string_buffer(_ATTR.size)
    if libc().syscall(numbers[1], 0, buf, _ATTR.size, 0) != 0:
        return None
    fields = _ATTR.unpack(buf.raw)
    return int(fields[5]) if fields[1] == SCHED_OTHER else None


def request_slice(ns: int = WORKER_SLICE_NS) -> int | None:
    """Ask for an ``ns`` slice for this process; return the slice now in force.

    ``None``: not granted (another policy, an unknown architecture, or a kernel before
    6.12, which accepts the call but keeps no custom slice).  Never raises: a worker runs
    either way, only with more lag.
    """
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or os.sched_getscheduler(0) != SCHED_OTHER:
        return None
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # sched_setattr sets nice too: keep it
    attr = _ATTR.pack(_ATTR.size, SCHED_OTHER, 0, nice, 0, ns, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, _ATTR.size)
    if libc().syscall(numbers[0], 0, buf, 0) != 0:
        return None
    # 6.12+ reports every fair task's slice (the default too); older kernels report 0
    return ns if current_slice_ns() == ns else None
