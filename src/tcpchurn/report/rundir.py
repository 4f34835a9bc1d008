"""Read a recorded run directory: ``summary.json`` and ``timeline.jsonl`` (docs/schema.md).

The timeline is read lazily, one line at a time, so a long run is never held in memory
as JSON; whatever is wrong with the directory becomes one :class:`BadValue` that names
the path and what to do (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpchurn.errors import BadValue

SUMMARY = "summary.json"
TIMELINE = "timeline.jsonl"
HINT = "give a directory written by `tcpchurn run --out DIR`"


@dataclass(frozen=True)
class RunDir:
    """A run directory whose ``summary.json`` has been read and checked."""

    path: Path
    summary: dict[str, Any]

    @property
    def label(self) -> str:
        """A short name for the run: the directory's name."""
        return self.path.resolve().name or str(self.path)

    def sysctls(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The client's and the server side's sysctls (``environment.sysctls`` and
        ``environment.server_sysctls``); empty when the summary has none."""
        env = self.summary.get("environment")
        if not isinstance(env, dict):
            return {}, {}
        client, server = env.get("sysctls"), env.get("server_sysctls")
        return (client if isinstance(client, dict) else {},
                server if isinstance(server, dict) else {})

    def timeline(self) -> Iterator[dict[str, Any]]:
        """Yield the timeline lines in order; a missing timeline yields nothing.

        Raises :class:`BadValue` naming the line that is not a JSON object.
        """
        path = self.path / TIMELINE
        if not path.exists():
            return
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise BadValue("RUN_DIR", str(self.path),
                                   f"{TIMELINE} line {lineno} is not JSON ({exc.msg}, column "
                                   f"{exc.colno}): re-record the run or delete that line"
                                   ) from None
                if not isinstance(line, dict):
                    raise BadValue("RUN_DIR", str(self.path),
                                   f"{TIMELINE} line {lineno} is not a JSON object: "
                                   "re-record the run or delete that line")
                yield line


def open_run(path: Path | str) -> RunDir:
    """Check that ``path`` is a run directory and read its summary.

    A missing directory, a missing or corrupt ``summary.json`` raise :class:`BadValue`,
    e.g. ``RUN_DIR: '/x' is not valid: no such directory: give a directory written by
    `tcpchurn run --out DIR```.
    """
    p = Path(path)
    if not p.is_dir():
        why = "it is a file, not a directory" if p.exists() else "no such directory"
        raise BadValue("RUN_DIR", str(p), f"{why}: {HINT}")
    summary_path = p / SUMMARY
    if not summary_path.is_file():
        raise BadValue("RUN_DIR", str(p), f"no {SUMMARY} in it: {HINT}")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadValue("RUN_DIR", str(p), f"{SUMMARY} is not JSON ({exc}): {HINT}") from None
    if not isinstance(summary, dict):
        raise BadValue("RUN_DIR", str(p), f"{SUMMARY} is not a JSON object: {HINT}")
    problem = check_summary(summary)
    if problem:
        raise BadValue("RUN_DIR", str(p), f"{SUMMARY}: {problem}: re-record the run")
    return RunDir(p, summary)


# Keys of schema §4 whose JSON type the report relies on; any of them may be null/absent.
_OBJECTS = ("connections", "errors", "first_error_s", "latency_ms",
            "latency_from_actual_start_ms", "environment", "config")
_LISTS_OF_OBJECTS = ("findings", "headroom")


def check_summary(summary: dict[str, Any]) -> str | None:
    """What is structurally wrong with a summary (schema §4), or ``None``.

    >>> check_summary({"findings": [{"limit": "x"}, 5]})
    "'findings' item 1 is int, not an object"
    """
    for key in _OBJECTS:
        v = summary.get(key)
        if v is not None and not isinstance(v, dict):
            return f"{key!r} is {type(v).__name__}, not an object"
    for key in ("latency_ms", "latency_from_actual_start_ms"):
        for kind, v in (summary.get(key) or {}).items():
            if v is not None and not isinstance(v, dict):
                return f"{key!r}.{kind} is {type(v).__name__}, not an object"
    sysctls = (summary.get("environment") or {}).get("sysctls")
    if sysctls is not None and not isinstance(sysctls, dict):
        return f"'environment'.sysctls is {type(sysctls).__name__}, not an object"
    for key in _LISTS_OF_OBJECTS:
        v = summary.get(key)
        if v is None:
            continue
        if not isinstance(v, list):
            return f"{key!r} is {type(v).__name__}, not a list"
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                return f"{key!r} item {i} is {type(item).__name__}, not an object"
    for i, finding in enumerate(summary.get("findings") or []):
        for key, kind in (("evidence", dict), ("fix", list), ("wrong_fixes", list)):
            v = finding.get(key)
            if v is not None and not isinstance(v, kind):
                want = "an object" if kind is dict else "a list"
                return f"'findings' item {i} {key!r} is {type(v).__name__}, not {want}"
    return None
