"""What keeps a lab safe while it runs: one lab at a time, and signals that restore.

``LabLock`` serialises labs on the host (two labs lowering the same global
``nf_conntrack_max`` would restore each other's values in the wrong order).
``signals_raise`` turns SIGTERM/SIGHUP into an exception so the lab's ``finally`` restores
the host; ``signals_deferred`` ignores them while the restore itself runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
from collections.abc import Iterator

from tcpchurn.errors import NotPermitted, UsageError
from tcpchurn.lab.journal import RUN_DIR

LOCK_NAME = "lab.lock"


class LabLock:
    """``flock`` on ``/run/tcpchurn/lab.lock``: one lab at a time on this host.

    The lock belongs to the open file description, so it dies with the process (a
    SIGKILLed lab does not block the next one); servers are started with
    ``close_fds=True`` and do not inherit it.
    """

    def __init__(self, run_dir: str = RUN_DIR) -> None:
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`UsageError` naming the holder."""
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError as exc:
            raise NotPermitted(f"cannot create {self.path}: the lab needs root") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(
                    f"another tcpchurn lab is running (pid {holder}): wait for it to end"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LabLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP while restoring, so a second Ctrl-C cannot cut the
    restore in half; the previous handlers come back afterwards."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class LabInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception so every ``finally`` runs."""


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`LabInterrupted` (SIGINT already
    raises ``KeyboardInterrupt``), so the lab's ``finally`` restores the host."""

    def _handler(signum: int, _frame: object) -> None:
        raise LabInterrupted(f"signal {signal.Signals(signum).name}")

    sigs = (signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, _handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
