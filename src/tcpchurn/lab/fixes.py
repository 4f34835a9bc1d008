"""Turn the diagnosis' fix lines into lab settings, so ``--fix`` applies *its* fix.

A finding's ``fix`` (docs/schema.md section 5) is a list of lines for a human: sysctl
commands, an nftables ruleset, ``ulimit -n``.  The lab applies the ones it can recognise
inside its own namespaces -- on the finding's ``side`` -- and journals them like any other
change.  Host-global sysctls (``nf_conntrack_max``) go to the host.  When a finding has
no line the lab can apply (e.g. "make the application accept faster"), the scenario's
own fix is used and the report says so.

>>> fix_lines_to_settings(["sysctl -w net.ipv4.tcp_tw_reuse=1"], "client").sysctls
{'client': {'net.ipv4.tcp_tw_reuse': '1'}}
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from tcpchurn.lab.scenarios import Scenario, Settings

# Present (and writable) only in the initial namespace: KERNEL.md section 2.
HOST_ONLY = frozenset({"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets"})

_SYSCTL = re.compile(r"^\s*(?:sudo\s+)?sysctl\s+(?:-\w+\s+)*(?P<assign>\S.*)$")
_ULIMIT = re.compile(r"ulimit\s+-n\s+(?P<n>\d+)")
_NOTRACK = re.compile(r"\bnotrack\b")


def _sysctl_assignments(line: str) -> list[tuple[str, str]]:
    m = _SYSCTL.match(line)
    if m is None:
        return []
    try:
        words = shlex.split(m.group("assign"))
    except ValueError:
        return []
    out: list[tuple[str, str]] = []
    for word in words:
        name, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", name):
            out.append((name, value.strip()))
    return out


def fix_lines_to_settings(lines: list[str], side: str) -> Settings | None:
    """The lab settings for the fix lines the lab can apply; ``None`` if none."""
    side = side if side in ("client", "server") else "server"
    sysctls: dict[str, str] = {}
    host: dict[str, str] = {}
    nft: tuple[str, ...] = ()
    load: dict[str, object] = {}
    for line in lines:
        for name, value in _sysctl_assignments(line):
            (host if name in HOST_ONLY else sysctls)[name] = value
        if _NOTRACK.search(line) and "notrack" not in nft:
            nft = (*nft, "notrack")
        m = _ULIMIT.search(line)
        if m is not None and side == "client":
            load["rlimit_nofile"] = int(m.group("n"))
    if not (sysctls or host or nft or load):
        return None
    return Settings(
        sysctls={side: sysctls} if sysctls else {},
        host_sysctls=host,
        nft={side: nft} if nft else {},
        load=load,
    )


def fix_settings(
    scenario: Scenario, findings: list[dict[str, Any]]
) -> tuple[Settings | None, str]:
    """The fix for the first finding and where it came from.

    The diagnosis' lines first; the scenario's fix when the finding carries nothing the
    lab can apply.  ``(None, ...)`` when there is neither.
    """
    if findings:
        first = findings[0]
        lines = [str(x) for x in first.get("fix") or []]
        settings = fix_lines_to_settings(lines, str(first.get("side") or "server"))
        if settings is not None:
            return settings, f"the diagnosis ({first.get('limit')}): " + "; ".join(
                settings.describe()
            )
    if scenario.fix is not None:
        return scenario.fix, "the scenario's data: " + "; ".join(scenario.fix.describe())
    return None, "nothing"
