"""The lab's journal: every change to the host is written down *before* it is made.

A lab changes global state: it creates network namespaces, writes sysctls (the global
``nf_conntrack_max`` among them), loads nftables rulesets and starts servers.  Each change
is appended to ``/run/tcpchurn/journal.jsonl`` and fsync'ed first, so whatever stops the
lab -- the end of the run, Ctrl-C, SIGTERM, or a SIGKILL that leaves no chance to clean
up -- the journal says what to undo.  :meth:`Journal.restore` undoes the entries in
reverse order and then deletes the file; any lab start repairs a leftover journal first,
and ``tcpchurn lab cleanup`` does it on demand.

One line per change, e.g.::

    {"kind": "netns", "name": "tcpchurn-s-1a2b3c"}
    {"kind": "sysctl", "netns": null, "key": "net/netfilter/nf_conntrack_max", "old": "262144"}
    {"kind": "process", "pid": 4242, "start": 123456, "argv": ["nginx", "-c", "..."]}

Every undo is idempotent and tolerates the change never having happened (a crash between
the journal write and the change): a namespace that does not exist is not deleted, a
process whose start time differs from the recorded one is not ours and is left alone.
A process is journaled after it started (its pid is not known before), so the window
in between is covered by the namespace entry written earlier: deleting a lab namespace
first kills every process that lives in it.

The journal only ever undoes what it recorded: it never touches a namespace it did not
create (tests use ``tcpchurn-t-*`` names of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO, Any

from tcpchurn.errors import UsageError
from tcpchurn.kernel.procfs import NETNS_RUN_DIR, Procfs

RUN_DIR = "/run/tcpchurn"
JOURNAL_NAME = "journal.jsonl"

KINDS = ("begin", "netns", "sysctl", "sysfs", "nft_table", "process", "tempdir", "link")


@dataclass(frozen=True)
class Entry:
    """One journaled change: what kind, and what is needed to undo it."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One journal line (without the newline)."""
        return json.dumps({"kind": self.kind, **self.data}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Entry:
        """Parse one journal line; raises ``ValueError`` on a torn or foreign line."""
        obj = json.loads(line)
        if not isinstance(obj, dict) or obj.get("kind") not in KINDS:
            raise ValueError(f"not a journal entry: {line!r}")
        kind = obj.pop("kind")
        return cls(kind, obj)

    def describe(self) -> str:
        """How the undo of this entry is reported to the user."""
        d = self.data
        where = f" in {d['netns']}" if d.get("netns") else ""
        if self.kind == "netns":
            return f"deleted network namespace {d['name']}"
        if self.kind == "sysctl":
            return f"restored {d['key'].replace('/', '.')} = {d['old']}{where}"
        if self.kind == "sysfs":
            return f"restored {d['path']} = {d['old']}"
        if self.kind == "nft_table":
            return f"deleted nft table {d['family']} {d['name']}{where}"
        if self.kind == "process":
            return f"stopped process {d['pid']} ({' '.join(d.get('argv', [])[:1])})"
        if self.kind == "tempdir":
            return f"removed {d['path']}"
        if self.kind == "link":
            return f"deleted link {d['name']}{where}"
        return f"lab started by pid {d.get('pid')}"


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), ``None`` if gone.

    A pid alone can be reused after the process exits; pid + start time cannot.
    The command name (field 2) may contain spaces and parentheses, so split after the
    last ``)`` (``fs/proc/array.c`` ``do_task_stat``).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[19])  # fields 3.. start at index 0; starttime is field 22


def netns_exists(name: str) -> bool:
    """True when ``ip netns add NAME`` made a namespace that still exists."""
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is the named one (like ``ip netns pids``)."""
    try:
        st = os.stat(os.path.join(NETNS_RUN_DIR, name))
    except FileNotFoundError:
        return []
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(entry))
    return found


def terminate(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in alive:
        end = time.monotonic() + 2.0
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    # Reap our own children so they do not linger as zombies (a zombie still "exists").
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    start = process_start_time(pid)
    if start is None:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def write_proc(netns: str | None, rel: str, value: str) -> None:
    """Write ``value`` to ``/proc/<rel>`` as seen from ``netns`` (``None``: the host)."""
    with Procfs(netns=netns) as proc:
        path = proc.path(rel)

        def _write() -> None:
            with open(path, "w", encoding="ascii") as f:
                f.write(value)

        proc.call(_write)


def read_proc(netns: str | None, rel: str) -> str:
    """Read ``/proc/<rel>`` as seen from ``netns``, stripped."""
    with Procfs(netns=netns) as proc:
        return proc.read(rel).strip()


class Journal:
    """An append-only, fsync'ed record of the lab's changes, and their undo."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.path.join(RUN_DIR, JOURNAL_NAME)
        self._file: IO[str] | None = None

    def exists(self) -> bool:
        """True when a journal (possibly left by a killed lab) is on disk."""
        return os.path.exists(self.path)

    def record(self, kind: str, **data: Any) -> Entry:
        """Append one entry and fsync it; call this BEFORE making the change."""
        if kind not in KINDS:
            raise ValueError(f"unknown journal kind {kind!r}")
        entry = Entry(kind, data)
        if self._file is None:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(entry.to_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return entry

    def entries(self) -> list[Entry]:
        """Every complete entry on disk; a torn last line (power loss) is skipped."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out: list[Entry] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(Entry.from_json(line))
            except ValueError:
                continue
        return out

    def restore(self) -> list[str]:
        """Undo every entry, newest first, then delete the journal.

        Returns one line per undone change.  An undo that fails is reported in the list
        (``failed: ...``) and the others still run: a half restore is worse than a
        complete one with one complaint.
        """
        done: list[str] = []
        for entry in reversed(self.entries()):
            if entry.kind == "begin":
                continue
            try:
                if undo(entry):
                    done.append(entry.describe())
            except (OSError, subprocess.SubprocessError, UsageError) as exc:
                done.append(f"failed: {entry.describe()}: {exc}")
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return done

    def close(self) -> None:
        """Close the file handle (the journal stays on disk)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def undo(entry: Entry) -> bool:
    """Undo one change; ``False`` when there was nothing left to undo."""
    d = entry.data
    netns = d.get("netns")
    if netns is not None and entry.kind in ("sysctl", "nft_table", "link") and not (
        netns_exists(netns)
    ):
        return False  # the namespace (and everything in it) is already gone
    if entry.kind == "process":
        pid = int(d["pid"])
        if process_start_time(pid) != d.get("start"):
            _alive(pid)  # reap it if it was our child
            return False
        terminate([pid])
        return True
    if entry.kind == "netns":
        name = str(d["name"])
        if not netns_exists(name):
            return False
        terminate(pids_in_netns(name))
        subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)
        return True
    if entry.kind == "sysctl":
        key, old = str(d["key"]), str(d["old"])
        if read_proc(netns, "sys/" + key) == old:
            return False
        write_proc(netns, "sys/" + key, old)
        return True
    if entry.kind == "sysfs":
        path, old = str(d["path"]), str(d["old"])
        with open(path, encoding="ascii") as f:
            if f.read().strip() == old:
                return False
        with open(path, "w", encoding="ascii") as f:
            f.write(old)
        return True
    if entry.kind == "nft_table":
        argv = ["nft", "delete", "table", str(d["family"]), str(d["name"])]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        return subprocess.run(argv, capture_output=True).returncode == 0
    if entry.kind == "link":
        argv = ["ip", *(["-n", netns] if netns else []), "link", "del", str(d["name"])]
        return subprocess.run(argv, capture_output=True).returncode == 0
    if entry.kind == "tempdir":
        if not os.path.isdir(str(d["path"])):
            return False
        shutil.rmtree(str(d["path"]), ignore_errors=True)
        return True
    return False
