"""``tcpchurn doctor`` without the terminal: read a namespace's limits, audit, forecast, fix.

:func:`examine` reads the sysctls, RLIMIT_NOFILE and the file table of one namespace
(through :class:`~tcpchurn.kernel.procfs.Procfs`), then runs the pure parts: the audit,
the forecast and the fixes for every table that fills before the run ends.  The CLI
renders the :class:`DoctorReport`; the lab may call this directly.
"""

from __future__ import annotations

import ipaddress
import resource
from dataclasses import dataclass, field
from typing import Any

from tcpchurn.diagnose.audit import AuditEntry, audit
from tcpchurn.diagnose.fixes import Fix, FixContext, fix_for, nft_notrack_ruleset, sysctl_d_text
from tcpchurn.diagnose.forecast import Plan, TableForecast, forecast
from tcpchurn.diagnose.sysctls import Sysctls
from tcpchurn.errors import BadValue, MissingTool, NotPermitted
from tcpchurn.kernel.conntrack import read_conntrack
from tcpchurn.kernel.limits import read_system_fds
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import SysctlSnapshot, read_sysctls, spec


@dataclass(frozen=True)
class Target:
    """``HOST:PORT`` as given to ``--target``."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and localhost."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_target(text: str) -> Target:
    """``"198.18.0.2:80"``, ``"[fd00:198:18::2]:80"``, ``"http://h:8080/"`` -> Target.

    >>> parse_target("[::1]:8080")
    Target(host='::1', port=8080)
    """
    hint = "give HOST:PORT, e.g. 198.18.0.2:80 or [::1]:8080"
    rest = text.split("://", 1)[1] if "://" in text else text
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise BadValue("--target", text, hint)
    port = int(port_text)
    if not 0 < port < 65536:
        raise BadValue("--target", text, "the port must be 1-65535")
    return Target(host, port)


@dataclass(frozen=True)
class DoctorReport:
    """Everything the doctor found for one plan in one namespace."""

    where: str
    plan: Plan
    forecast: list[TableForecast]
    audit: list[AuditEntry]
    fixes: list[Fix]
    sysctl_text: str
    nft_text: str | None
    rlimit_nofile: tuple[int | None, int | None]
    settings: dict[str, str] = field(default_factory=dict)  # what --apply would write here
    not_here: dict[str, str] = field(default_factory=dict)  # fixes for another host/scope

    @property
    def first_to_fill(self) -> TableForecast | None:
        """The table that fills first, if any fills at all."""
        rows = [r for r in self.forecast if r.seconds_to_full is not None]
        return rows[0] if rows else None

    def to_json(self) -> dict[str, Any]:
        """docs/schema.md §6."""
        return {
            "where": self.where,
            "plan": self.plan.to_json(),
            "forecast": [r.to_json() for r in self.forecast],
            "audit": [a.to_json() for a in self.audit],
            "fixes": {"sysctl": self.sysctl_text, "nft": self.nft_text,
                      "detail": [f.to_json() for f in self.fixes]},
            "rlimit_nofile": list(self.rlimit_nofile),
        }


def _needs_fix(row: TableForecast, plan: Plan) -> bool:
    if row.fills_within(plan.duration):
        return True
    return row.max_sustainable_rate is not None and row.max_sustainable_rate < plan.rate


def _applicable(snapshot: SysctlSnapshot, name: str, in_netns: bool) -> bool:
    """Writable where the doctor runs: global or read-only sysctls are not, in a netns."""
    try:
        scope = spec(name).scope
    except KeyError:
        return True
    present = snapshot.entry(name).present
    return present and (not in_netns or scope == "netns")


def build_report(
    snapshot: SysctlSnapshot,
    plan: Plan,
    *,
    where: str = "host",
    port: int | None = None,
    in_netns: bool = False,
    rlimit_nofile: tuple[int | None, int | None] = (None, None),
    files_allocated: int | None = None,
    conntrack_active: bool | None = None,
) -> DoctorReport:
    """The pure part of the doctor: audit, forecast and fixes for ``plan``."""
    view = Sysctls(snapshot)
    rows = forecast(plan, view, rlimit_nofile, files_allocated, conntrack_active)
    fixes: list[Fix] = []
    for row in rows:
        if not _needs_fix(row, plan):
            continue
        side = "server" if row.side == "server" else "client"
        ctx = FixContext(rate=plan.rate, port=port, loopback=plan.loopback, side=side,
                         close=plan.close, source_ips=plan.source_ips, sysctls=view,
                         init_netns=not in_netns)
        fixes.append(fix_for(row.limit, ctx))
    sides = ("client", "server") if plan.loopback else ("client",)
    settings: dict[str, str] = {}
    not_here: dict[str, str] = {}
    for fix in fixes:
        # Conntrack fills only where something tracks: with no entries and no ct/NAT rule
        # here, its fix belongs on the server or the NAT host, not on this namespace.
        untracked = fix.limit == "conntrack_full" and conntrack_active is False
        for side, values in fix.sysctls.items():
            for name, value in values.items():
                if untracked:
                    not_here.setdefault(name, f"{value} (where connections are tracked)")
                elif side in sides and _applicable(snapshot, name, in_netns):
                    settings.setdefault(name, value)
                else:
                    not_here.setdefault(name, f"{value} (on the {side}, or outside this netns)")
    header = (f"sysctl.d for {where}: tcpchurn doctor --rate {plan.rate:g} --close {plan.close} "
              f"--source-ips {plan.source_ips}\ninstall as /etc/sysctl.d/90-tcpchurn.conf, "
              "then `sysctl --system`")
    text = sysctl_d_text(fixes, "client", header)
    server_fixes = [f for f in fixes if f.sysctls.get("server")]
    if server_fixes:
        text += "\n" + sysctl_d_text(server_fixes, "server",
                                     "on the server (the same host when testing loopback)")
    return DoctorReport(
        where=where, plan=plan, forecast=rows, audit=audit(snapshot, plan), fixes=fixes,
        sysctl_text=text, nft_text=nft_notrack_ruleset(port) if port else None,
        rlimit_nofile=rlimit_nofile, settings=settings, not_here=not_here,
    )


def examine(plan: Plan, procfs: Procfs, port: int | None = None) -> DoctorReport:
    """Read ``procfs``'s namespace and build the report (the doctor's only I/O)."""
    snapshot = read_sysctls(procfs)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    rlimit = (None if soft == resource.RLIM_INFINITY else soft,
              None if hard == resource.RLIM_INFINITY else hard)
    try:
        files: int | None = read_system_fds(procfs).allocated
    except (OSError, ValueError):
        files = None
    try:
        # Tracking happens only when a rule uses conntrack (KERNEL.md §1 A); nft needs root.
        ct = read_conntrack(procfs, ruleset=True)
        active: bool | None = ct.active if ct.loaded else False
    except (NotPermitted, MissingTool):
        ct = read_conntrack(procfs)
        active = True if ct.count else None
    return build_report(
        snapshot, plan, where=procfs.label, port=port, in_netns=procfs.netns is not None,
        rlimit_nofile=rlimit, files_allocated=files, conntrack_active=active,
    )
