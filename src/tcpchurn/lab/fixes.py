"""Turn the diagnosis' fix into lab settings, so ``--fix`` applies *its* fix.

The diagnosis builds a :class:`tcpchurn.diagnose.fixes.Fix` per limit with
machine-applicable parts: sysctls per side, an nft ruleset, a listen backlog.  The lab
applies those inside its own namespaces (and the host-only conntrack sysctls on the
host), journaled like every other change.  Parts that need a person ("accept faster",
SO_REUSEPORT) are shown, not applied.  When the diagnosis' fix has no part the lab can
apply, the scenario's own fix is used and the report says so.

>>> from tcpchurn.diagnose.fixes import Fix
>>> settings_from_fix(Fix("tw_buckets", "", sysctls={"server": {"net.ipv4.tcp_max_tw_buckets":
...     "131072"}}), "server").sysctls
{'server': {'net.ipv4.tcp_max_tw_buckets': '131072'}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tcpchurn.diagnose.fixes import Fix, FixContext, fix_for
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.lab.scenarios import Scenario, Settings

# Present (and writable) only in the initial namespace: KERNEL.md section 2.
HOST_ONLY = frozenset({"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets"})
_BACKLOG = re.compile(r"(?:backlog=|ListenBacklog\s+)(\d+)")


@dataclass(frozen=True)
class PassContext:
    """What the fix is sized for: the pass that showed the finding."""

    rate: float
    close: str
    source_ips: int
    sysctls: Mapping[str, Any]  # side -> a sysctl snapshot (or mapping) of that namespace


def _backlog(fix: Fix) -> int | None:
    raw = fix.socket.get("listen_backlog")
    if raw is not None and str(raw).isdigit():
        return int(raw)
    for line in fix.server.values():
        m = _BACKLOG.search(line)
        if m is not None:
            return int(m.group(1))
    return None


def settings_from_fix(fix: Fix, side: str) -> Settings | None:
    """The parts of ``fix`` the lab can apply, as :class:`Settings`; ``None`` if none."""
    sysctls: dict[str, dict[str, str]] = {}
    host: dict[str, str] = {}
    for where, values in fix.sysctls.items():
        for name, value in values.items():
            if name in HOST_ONLY:
                host[name] = value
            else:
                sysctls.setdefault(where, {})[name] = value
    nft_text = {side: fix.nft} if fix.nft else {}
    server: dict[str, object] = {}
    backlog = _backlog(fix)
    if backlog is not None and side == "server":
        server["backlog"] = backlog
    load: dict[str, object] = {}
    if fix.limit == "fd_process" and side == "client":
        # "raise the soft limit to the hard one": the lab lowered both for the scenario,
        # so the fix is to run without that lowered limit (the host's own).
        load["rlimit_nofile"] = None
    if not (sysctls or host or nft_text or server or load):
        return None
    return Settings(sysctls=sysctls, host_sysctls=host, nft_text=nft_text, server=server,
                    load=load)


def fix_settings(
    scenario: Scenario, findings: list[dict[str, Any]], ctx: PassContext
) -> tuple[Settings | None, str, list[str]]:
    """The fix for the first finding, where it came from, and its lines for the user.

    The diagnosis' own fix first (``fix_for``); the scenario's when the diagnosis has no
    part the lab can apply.  ``(None, "nothing", [])`` when there is neither.
    """
    if findings:
        first = findings[0]
        limit = str(first.get("limit"))
        side = str(first.get("side") or "server")
        side = side if side in ("client", "server") else "server"
        try:
            fix = fix_for(limit, FixContext(
                rate=ctx.rate, port=80, loopback=False, side=side, close=ctx.close,
                source_ips=ctx.source_ips, sysctls=Sysctls(ctx.sysctls.get(side)),
                init_netns=True, evidence=first.get("evidence") or {},
            ))  # fmt: skip
        except KeyError:
            fix = None
        if fix is not None:
            settings = settings_from_fix(fix, side)
            if settings is not None:
                source = f"the diagnosis ({limit} on the {side})"
                extra = scenario.fix
                if extra is not None and (extra.server or extra.load):
                    # What only the lab can do for a human step of the fix ("accept
                    # faster": the lab's application is ours): the scenario's server and
                    # load parts, under the diagnosis' own.
                    settings = replace(
                        settings,
                        server={**extra.server, **settings.server},
                        load={**extra.load, **settings.load},
                    )
                    source += " + the scenario's " + ", ".join(
                        f"{k}={v}" for k, v in {**extra.server, **extra.load}.items()
                    )
                return settings, source, fix.lines()
    if scenario.fix is not None:
        return scenario.fix, "the scenario's data", scenario.fix.describe()
    return None, "nothing", []
