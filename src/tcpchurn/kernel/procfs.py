"""Where kernel state is read from: this network namespace, another one, or fixture files.

Every reader in :mod:`tcpchurn.kernel` takes a :class:`Procfs` and asks it for paths
relative to ``/proc`` (``"net/sockstat"``, ``"sys/net/netfilter/nf_conntrack_max"``).
Parsers never open files themselves (STYLE.md rule 2), so a fixture directory or another
namespace works without the caller wrapping itself in ``ip netns exec``.

How another namespace is read: ``setns(2)`` with ``CLONE_NEWNET`` changes the namespace of
the *calling thread* only.  A :class:`Procfs` for another namespace therefore owns one
thread that entered it and stays there.  In that thread

* ``/proc/thread-self/net/*`` shows that namespace (``/proc/self/net`` would follow the
  thread-group leader, which is still in ours: ``fs/proc/proc_net.c`` ``get_proc_task_net``);
* ``/proc/sys/net/*`` is resolved against ``current->nsproxy->net_ns`` at open time
  (``net/sysctl_net.c`` ``net_ctl_header_lookup``);
* an ``AF_NETLINK`` socket created there belongs to that namespace for its whole life
  (``net/netlink/af_netlink.c`` ``__netlink_create`` takes ``sock_net`` from the creator).

Global values (``fs/file-nr``, ``tcp_mem``) read the same everywhere.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tcpchurn.errors import NamespaceNotFound, NotPermitted
from tcpchurn.libc import libc

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` bind-mounts named namespaces


def _setns(fd: int, nstype: int) -> None:
    """``setns(2)``: Python 3.11 has no ``os.setns`` (it came in 3.12)."""
    if libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(netns: str | None = None, pid: int | None = None) -> str | None:
    """The namespace file for ``--netns NAME`` or ``--pid PID``; ``None`` for our own.

    Raises :class:`NamespaceNotFound` with the value that was wrong.
    """
    if netns is not None and pid is not None:
        raise NamespaceNotFound("give either --netns or --pid, not both")
    if netns is not None:
        if "/" in netns or netns in ("", ".", ".."):
            raise NamespaceNotFound(f"--netns: {netns!r} is not a namespace name")
        path = os.path.join(NETNS_RUN_DIR, netns)
        if not os.path.exists(path):
            known = sorted(os.listdir(NETNS_RUN_DIR)) if os.path.isdir(NETNS_RUN_DIR) else []
            hint = f"known: {', '.join(known)}" if known else "`ip netns list` shows none"
            raise NamespaceNotFound(f"--netns: no network namespace named {netns!r} ({hint})")
        return path
    if pid is not None:
        if pid <= 0:
            raise NamespaceNotFound(f"--pid: {pid} is not a process id")
        path = f"/proc/{pid}/ns/net"
        if not os.path.exists(f"/proc/{pid}"):
            raise NamespaceNotFound(f"--pid: no process with pid {pid}")
        return path
    return None


def _same_netns(path: str) -> bool:
    try:
        theirs = os.stat(path)
        ours = os.stat("/proc/self/ns/net")
    except PermissionError as exc:
        raise NotPermitted(f"cannot open {path}: permission denied (run as root)") from exc
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


class _NetnsThread:
    """One daemon thread that entered a network namespace and runs calls there."""

    def __init__(self, path: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]] | None]
        self._calls = queue.SimpleQueue()
        started: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._main, args=(path, started), name=f"netns:{path}", daemon=True
        )
        self._thread.start()
        failure = started.get()
        if failure is not None:
            raise failure

    def _main(self, path: str, started: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (_errno.EPERM, _errno.EACCES):
                started.put(NotPermitted(f"cannot enter network namespace {path}: run as root"))
            elif exc.errno == _errno.ENOENT:
                started.put(NamespaceNotFound(f"network namespace {path} has gone"))
            else:
                started.put(NamespaceNotFound(f"cannot enter network namespace {path}: {exc}"))
            return
        started.put(None)
        while (item := self._calls.get()) is not None:
            fn, reply = item
            try:
                reply.put((True, fn()))
            except BaseException as exc:  # handed back to the caller's thread
                reply.put((False, exc))

    def call(self, fn: Callable[[], T]) -> T:
        reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._calls.put((fn, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=1.0)


class Procfs:
    """A view of ``/proc`` for one network namespace (or a fixture directory).

    >>> Procfs().read("sys/net/ipv4/tcp_fin_timeout").strip().isdigit()
    True
    """

    def __init__(
        self,
        netns: str | None = None,
        pid: int | None = None,
        root: str = "/proc",
    ) -> None:
        self.root = root
        self.netns = netns
        self.pid = pid
        self._thread: _NetnsThread | None = None
        path = netns_path(netns, pid)
        if root == "/proc" and path is not None and not _same_netns(path):
            self._thread = _NetnsThread(path)

    @classmethod
    def fixture(cls, directory: str) -> Procfs:
        """Read captured files from ``directory`` laid out like ``/proc``."""
        return cls(root=directory)

    @property
    def label(self) -> str:
        """How this view is named to the user: ``host``, ``netns NAME`` or ``pid N``."""
        if self.netns is not None:
            return f"netns {self.netns}"
        if self.pid is not None:
            return f"pid {self.pid}"
        return "host" if self.root == "/proc" else self.root

    @property
    def is_live(self) -> bool:
        """True when reading the running kernel (not fixtures)."""
        return self.root == "/proc"

    def path(self, rel: str) -> str:
        """The absolute path that :meth:`read` opens for ``rel`` (in the right thread)."""
        if self.root != "/proc":
            return os.path.join(self.root, rel)
        if self._thread is not None and rel.startswith("net/"):
            return "/proc/thread-self/" + rel
        if self.pid is not None and self._thread is None and rel.startswith("net/"):
            return f"/proc/{self.pid}/{rel}"
        return "/proc/" + rel

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside this namespace (for sockets that must be created there)."""
        if self._thread is None:
            return fn()
        return self._thread.call(fn)

    def read(self, rel: str) -> str:
        """The whole text of ``/proc/<rel>`` in this namespace.

        Raises ``FileNotFoundError`` when the kernel has no such file (a module not
        loaded, a sysctl removed); callers turn that into "absent" with a reason.
        """
        path = self.path(rel)

        def _read() -> str:
            with open(path, encoding="ascii", errors="replace") as f:
                return f.read()

        return self.call(_read)

    def read_optional(self, rel: str) -> str | None:
        """Like :meth:`read`, but ``None`` when the file does not exist."""
        try:
            return self.read(rel)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Leave the namespace (ends the thread); reading afterwards is an error."""
        if self._thread is not None:
            self._thread.close()
            self._thread = None

    def __enter__(self) -> Procfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
