"""File descriptors: the system table (``fs/file-nr``) and one process's use and limit.

Raw -> decoded::

    /proc/sys/fs/file-nr      "756\\t0\\t2466170"      -> allocated 756, max 2466170
    /proc/PID/limits          "Max open files  20000  20000  files"  -> soft/hard 20000
    /proc/PID/fd/             40 entries                -> open 40

``file-nr``'s middle field has been 0 since Linux 2.6 (``fs/file_table.c``
``proc_nr_files``: free handles are no longer kept).  ``fs.file-max`` bounds the first
field (ENFILE, bypassed with CAP_SYS_ADMIN); ``fs.nr_open`` caps RLIMIT_NOFILE, whose
soft value gives EMFILE (KERNEL.md 1.I).  These are global: the same in every netns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tcpchurn.errors import ParseError
from tcpchurn.kernel.procfs import Procfs

FILE_NR = "sys/fs/file-nr"
NR_OPEN = "sys/fs/nr_open"


@dataclass(frozen=True)
class SystemFds:
    """The system-wide file table."""

    allocated: int
    max: int
    nr_open: int | None

    def to_json(self) -> dict[str, int | None]:
        """``fds.system`` of docs/schema.md section 1."""
        return {"allocated": self.allocated, "max": self.max, "nr_open": self.nr_open}


@dataclass(frozen=True)
class ProcessFds:
    """One process's open descriptors and RLIMIT_NOFILE (None = unlimited)."""

    pid: int
    open: int
    soft: int | None
    hard: int | None

    def to_json(self) -> dict[str, int | None]:
        """``fds.process`` of docs/schema.md section 1."""
        return {"pid": self.pid, "open": self.open, "soft": self.soft, "hard": self.hard}


def parse_file_nr(text: str, nr_open: str | None = None, path: str = "/proc/sys/fs/file-nr",
                  nr_open_path: str = "/proc/sys/fs/nr_open") -> SystemFds:
    """``"756\\t0\\t2466170\\n"`` (and nr_open's text) -> :class:`SystemFds`."""
    words = text.split()
    if len(words) != 3 or not all(w.isdigit() for w in words):
        raise ParseError(path, 1, text.rstrip("\n"), "expected 'allocated free max'")
    cap: int | None = None
    if nr_open is not None:
        if not nr_open.strip().isdigit():
            raise ParseError(nr_open_path, 1, nr_open.rstrip("\n"), "expected an integer")
        cap = int(nr_open)
    return SystemFds(allocated=int(words[0]), max=int(words[2]), nr_open=cap)


def parse_limits_nofile(text: str, path: str = "/proc/self/limits") -> tuple[int | None,
                                                                          int | None]:
    """The soft and hard RLIMIT_NOFILE from a ``/proc/PID/limits`` text.

    >>> parse_limits_nofile("Max open files            1024     524288   files\\n")
    (1024, 524288)
    """
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("Max open files"):
            continue
        words = line[len("Max open files"):].split()
        if len(words) < 2:
            raise ParseError(path, lineno, line, "expected soft and hard limits")
        out: list[int | None] = []
        for w in words[:2]:
            if w == "unlimited":  # RLIM_INFINITY: impossible for NOFILE, but printed so
                out.append(None)
            elif w.isdigit():
                out.append(int(w))
            else:
                raise ParseError(path, lineno, line, f"{w!r} is not a limit")
        return out[0], out[1]
    raise ParseError(path, 0, "", "no 'Max open files' line")


def read_system_fds(procfs: Procfs | None = None) -> SystemFds:
    """Read ``fs/file-nr`` and ``fs/nr_open``."""
    procfs = procfs if procfs is not None else Procfs()
    return parse_file_nr(procfs.read(FILE_NR), procfs.read_optional(NR_OPEN),
                         procfs.path(FILE_NR), procfs.path(NR_OPEN))


def read_process_fds(pid: int, procfs: Procfs | None = None) -> ProcessFds | None:
    """Count ``/proc/PID/fd`` and read its RLIMIT_NOFILE; None if the process has gone.

    Other users' processes need root to list ``fd/``: that raises ``PermissionError``.
    For our own pid the count includes the descriptor of the directory being listed
    (as ``ls /proc/self/fd`` and psutil's ``num_fds`` do).
    """
    procfs = procfs if procfs is not None else Procfs()
    try:
        limits = procfs.read(f"{pid}/limits")
        count = len(os.listdir(procfs.path(f"{pid}/fd")))
    except (FileNotFoundError, ProcessLookupError):
        return None  # exited between samples: skipped, like psutil's vanished pids
    soft, hard = parse_limits_nofile(limits, procfs.path(f"{pid}/limits"))
    return ProcessFds(pid=pid, open=count, soft=soft, hard=hard)
