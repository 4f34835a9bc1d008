"""Apply sysctl fixes and revert them exactly, with the previous values in a state file.

``tcpchurn doctor --apply`` writes the previous value of every sysctl it will change to
``/run/tcpchurn/doctor-<netns or host>.json`` (fsync'd) *before* changing anything, so a
crash mid-way still leaves a complete record; ``--revert`` writes those values back and
removes the file.  /run is a tmpfs: after a reboot the kernel defaults are back anyway.

Writes go through :meth:`Procfs.call` so that ``/proc/sys/net/*`` resolves in the target
namespace (``net/sysctl_net.c`` resolves against the writer's netns at open time).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass

from tcpchurn.errors import NotPermitted, UsageError
from tcpchurn.kernel.procfs import Procfs

STATE_DIR = "/run/tcpchurn"


@dataclass(frozen=True)
class Change:
    """One sysctl changed (or restored): its name, the value before and after."""

    name: str
    before: str
    after: str


def state_path(netns: str | None, state_dir: str = STATE_DIR) -> str:
    """``/run/tcpchurn/doctor-host.json`` or ``.../doctor-<netns>.json``."""
    return os.path.join(state_dir, f"doctor-{netns or 'host'}.json")


def rel_path(name: str) -> str:
    """``net.ipv4.tcp_tw_reuse`` -> ``sys/net/ipv4/tcp_tw_reuse`` (under /proc)."""
    return "sys/" + name.replace(".", "/")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _write(procfs: Procfs, name: str, value: str) -> None:
    path = procfs.path(rel_path(name))

    def write() -> None:
        with open(path, "w", encoding="ascii") as f:
            f.write(value + "\n")

    try:
        procfs.call(write)
    except PermissionError as exc:
        raise NotPermitted(
            f"cannot write {name} in {procfs.label}: run as root (and note that global or "
            "read-only sysctls cannot be changed from inside a namespace)"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UsageError(f"{name}: the kernel refused {value!r} ({exc.strerror})") from exc
        raise


def apply_sysctls(procfs: Procfs, settings: dict[str, str], state_file: str) -> list[Change]:
    """Save the current values of ``settings`` to ``state_file``, then write them.

    Refuses when ``state_file`` exists (a previous ``--apply`` not yet reverted: applying
    twice would record the tuned values as "previous").  If a write fails, what was
    already written is restored and the state file removed before the error propagates.
    """
    if os.path.exists(state_file):
        raise UsageError(
            f"{state_file} exists: a previous --apply is still in force; run --revert first"
        )
    before: dict[str, str] = {}
    for name in settings:
        text = procfs.read_optional(rel_path(name))
        if text is None:
            raise UsageError(f"{name} does not exist in {procfs.label}: cannot apply it here")
        before[name] = _norm(text)
    todo = {n: v for n, v in settings.items() if _norm(v) != before[n]}
    if not todo:
        return []
    os.makedirs(os.path.dirname(state_file) or ".", exist_ok=True)
    record = {"where": procfs.label, "previous": {n: before[n] for n in todo}, "applied": todo}
    tmp = state_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_file)
    done: list[Change] = []
    try:
        for name, value in todo.items():
            _write(procfs, name, value)
            done.append(Change(name, before[name], _norm(value)))
    except BaseException:
        for change in reversed(done):
            _write(procfs, change.name, change.before)
        os.unlink(state_file)
        raise
    return done


def revert_sysctls(procfs: Procfs, state_file: str) -> list[Change]:
    """Write back every value recorded in ``state_file``, then remove the file."""
    try:
        with open(state_file, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"nothing to revert: {state_file} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{state_file} is not a tcpchurn state file ({exc})") from exc
    previous = record.get("previous") if isinstance(record, dict) else None
    if not isinstance(previous, dict):
        raise UsageError(f"{state_file} has no 'previous' values: not a tcpchurn state file")
    changes = []
    for name, value in previous.items():
        current = procfs.read_optional(rel_path(name))
        _write(procfs, name, str(value))
        changes.append(Change(name, _norm(current or ""), str(value)))
    os.unlink(state_file)
    return changes
