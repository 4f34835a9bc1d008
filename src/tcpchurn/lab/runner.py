"""Run one lab scenario: build, load, diagnose, restore -- and, with ``--fix``, again.

One *pass* is: take the lab lock, repair a leftover journal, build the namespaces,
apply the scenario's settings (plus the fix on the second pass), start the server,
drive ``tcpchurn run`` inside the client namespace (a subprocess, so the load has its
own interpreter and cores), then stop everything and restore the host from the journal.
Each pass starts from fresh namespaces, so the "after" run does not inherit the
"before" run's TIME_WAIT sockets or conntrack entries.

The library never prints: progress goes to a ``progress(line)`` callback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from tcpchurn.errors import NotPermitted, TcpchurnError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls
from tcpchurn.lab import faults
from tcpchurn.lab.client import run_load
from tcpchurn.lab.fixes import PassContext, fix_settings
from tcpchurn.lab.guard import LabLock, signals_deferred, signals_raise
from tcpchurn.lab.journal import Journal
from tcpchurn.lab.results import LabResult, PassResult, findings_of, read_json
from tcpchurn.lab.sampler import Sample, Sampler, stall_time
from tcpchurn.lab.scenarios import Load, Scenario, Settings, merge
from tcpchurn.lab.servers import RunningServer, ServerSpec, require_tool, start_server
from tcpchurn.lab.topology import Topology, build, new_lab_id, wait_connectable
from tcpchurn.lab.tuples import TupleStats, parse_nf_conntrack, tuple_stats

Progress = Callable[[str], None]

NFT_FAULTS: dict[str, Callable[[Journal, str], None]] = {
    "conntrack": faults.enable_conntrack,
    "drop_final_ack": faults.drop_final_ack,
    "notrack": faults.notrack_port80,
}


@dataclass(frozen=True)
class LabOptions:
    """What the user may change on the command line."""

    server: str | None = None  # apache | nginx | builtin (None: the scenario's)
    rate: float | None = None
    duration: float | None = None
    client_addrs: int | None = None
    fix: bool = False
    out_dir: str = "out/lab"


def check_environment(spec: ServerSpec) -> None:
    """Root, nft, ip and the server binary: one clear error naming the fix."""
    if os.geteuid() != 0:
        raise NotPermitted("the lab creates network namespaces: run it as root (sudo)")
    from shutil import which

    from tcpchurn.errors import MissingTool

    if which("nft") is None:
        raise MissingTool("nft", "apt-get install nftables")
    if which("ip") is None:
        raise MissingTool("ip", "apt-get install iproute2")
    require_tool(spec.kind)


def repair(journal: Journal) -> list[str]:
    """Restore a journal left by a lab that was killed; returns what was undone."""
    if not journal.exists():
        return []
    with signals_deferred():
        return journal.restore()


def cleanup() -> list[str]:
    """``tcpchurn lab cleanup``: take the lock and restore any leftover journal."""
    if os.geteuid() != 0:
        raise NotPermitted("the lab's cleanup changes namespaces and sysctls: run it as root")
    with LabLock():
        return repair(Journal())


def effective(scenario: Scenario, opts: LabOptions, settings: Settings) -> tuple[
    ServerSpec, Load, int
]:
    """The server, load and number of client addresses one pass really uses."""
    spec = scenario.server
    if opts.server is not None:
        spec = replace(spec, kind=opts.server)
    spec = replace(spec, **settings.server)  # type: ignore[arg-type]
    load = replace(scenario.load, **settings.load)  # type: ignore[arg-type]
    if opts.rate is not None:
        load = replace(load, rate=opts.rate)
    if opts.duration is not None:
        load = replace(load, duration=opts.duration)
    addrs = opts.client_addrs or settings.client_addrs or scenario.client_addrs
    return spec, load, addrs


def apply_settings(journal: Journal, topo: Topology, settings: Settings) -> None:
    """Host sysctls, per-side sysctls and nft faults, each journaled before it is made."""
    ns = {"client": topo.client_ns, "server": topo.server_ns}
    for name, value in settings.host_sysctls.items():
        if name == "net.netfilter.nf_conntrack_buckets":
            faults.set_conntrack_hashsize(journal, int(value))
        else:
            faults.set_sysctl(journal, None, name, value)
    for side, values in settings.sysctls.items():
        for name, value in values.items():
            faults.set_sysctl(journal, ns[side], name, value)
    for side, names in settings.nft.items():
        for fault in names:
            NFT_FAULTS[fault](journal, ns[side])
    for side, text in settings.nft_text.items():
        faults.load_nft_text(journal, ns[side], text)


def conntrack_tuples(netns: str) -> TupleStats | None:
    """What fills the server's conntrack table (only readable as root)."""
    with Procfs(netns=netns) as proc:
        text = proc.read_optional("net/nf_conntrack")
    return tuple_stats(parse_nf_conntrack(text)) if text else None


@contextmanager
def journaled(progress: Progress) -> Iterator[Journal]:
    """The lock, a repaired journal, and a restore that always runs (also on signals)."""
    journal = Journal()
    with LabLock():
        undone = repair(journal)
        if undone:
            progress(f"repaired a leftover lab journal ({len(undone)} changes undone)")
        journal.record("begin", pid=os.getpid(), time=time.time())
        try:
            with signals_raise():
                yield journal
        finally:
            with signals_deferred():
                restored = journal.restore()
            progress(f"restored the host ({len(restored)} changes undone)")


def run_pass(
    scenario: Scenario,
    opts: LabOptions,
    settings: Settings,
    label: str,
    out_dir: str,
    progress: Progress,
) -> PassResult:
    """Build the lab with ``settings``, run the load once, restore the host."""
    spec, load, addrs = effective(scenario, opts, settings)
    check_environment(spec)
    os.makedirs(out_dir, exist_ok=True)
    topo = Topology.plan(new_lab_id(), addrs)
    server: RunningServer | None = None
    samples: list[Sample] = []
    tuples: TupleStats | None = None
    code: int | None = None
    snapshots: dict[str, Any] = {}
    with journaled(progress) as journal:
        progress(f"[{label}] namespaces {topo.client_ns} / {topo.server_ns}, "
                 f"{addrs} client address(es)")
        build(journal, topo)
        apply_settings(journal, topo, settings)
        for line in settings.describe():
            progress(f"[{label}] set {line}")
        progress(f"[{label}] starting {spec.kind} in {topo.server_ns}")
        server = start_server(journal, topo.server_ns, spec)
        try:
            wait_connectable(topo.client_ns, topo.server_v4, 80, check=server.check_alive)
            progress(f"[{label}] load: {load.rate:g} conn/s for {load.duration:g} s, "
                     f"close={load.close}, mode={load.mode}")
            sampler = Sampler(topo.server_ns, seed_view=scenario.seed_view)
            sampler.start()
            try:
                code = run_load(journal, topo, load, addrs, out_dir)
            finally:
                samples = sampler.stop()
            if "conntrack" in settings.nft.get("server", ()):
                tuples = conntrack_tuples(topo.server_ns)
            for side, netns in (("client", topo.client_ns), ("server", topo.server_ns)):
                with Procfs(netns=netns) as proc:
                    snapshots[side] = read_sysctls(proc)
        finally:
            server.stop()
            server.copy_logs(out_dir)
    with open(os.path.join(out_dir, "lab_samples.jsonl"), "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json()) + "\n")
    summary = read_json(os.path.join(out_dir, "summary.json"))
    if summary is None:
        raise TcpchurnError(
            f"tcpchurn run wrote no summary (exit {code}); see {out_dir}/load-output.log"
        )
    result = PassResult(
        label=label, out_dir=out_dir, settings=settings.describe(), summary=summary,
        findings=findings_of(out_dir, summary), samples=samples,
        stall_s=stall_time(samples), tuples=tuples, load_exit=code, sysctls=snapshots,
        addrs=addrs, rate=load.rate, close=load.close,
    )  # fmt: skip
    with open(os.path.join(out_dir, "lab.json"), "w", encoding="utf-8") as f:
        json.dump(result.to_json(), f, indent=2)
    return result


def run_scenario(scenario: Scenario, opts: LabOptions, progress: Progress) -> LabResult:
    """The whole ``lab run``: before, and with ``opts.fix`` the fix and after."""
    before_dir = os.path.join(opts.out_dir, "before") if opts.fix else opts.out_dir
    before = run_pass(scenario, opts, scenario.settings, "before", before_dir, progress)
    progress(f"[before] first finding: {before.first or 'none'} "
             f"(expected {scenario.expected or 'none'})")
    result = LabResult(scenario=scenario, before=before)
    if not opts.fix:
        return result
    ctx = PassContext(rate=before.rate, close=before.close, source_ips=before.addrs,
                      sysctls=before.sysctls)
    fix, source, lines = fix_settings(scenario, before.findings, ctx)
    if fix is None:
        progress("[fix] nothing to fix: no finding and no fix for this scenario")
        return result
    result.fix_source, result.fix_lines = source, lines
    progress(f"[fix] applying the fix from {source}: {'; '.join(fix.describe())}")
    merged = merge(scenario.settings, fix)
    after_dir = os.path.join(opts.out_dir, "after")
    result.after = run_pass(scenario, opts, merged, "after", after_dir, progress)
    progress(f"[after] findings: {', '.join(result.after.limits) or 'none'}")
    return result
