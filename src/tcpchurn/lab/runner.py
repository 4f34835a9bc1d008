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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tcpchurn.errors import NotPermitted, TargetError, TcpchurnError
from tcpchurn.kernel.procfs import Procfs
from tcpchurn.kernel.sysctl import read_sysctls
from tcpchurn.lab import faults
from tcpchurn.lab.fixes import PassContext, fix_settings
from tcpchurn.lab.journal import (
    Journal,
    LabLock,
    process_start_time,
    signals_deferred,
    signals_raise,
)
from tcpchurn.lab.sampler import Sample, Sampler, stall_time
from tcpchurn.lab.scenarios import Load, Scenario, Settings
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


@dataclass
class PassResult:
    """One pass (before or after the fix)."""

    label: str
    out_dir: str
    settings: list[str]
    summary: dict[str, Any] | None
    findings: list[dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)
    stall_s: float | None = None
    tuples: TupleStats | None = None
    load_exit: int | None = None
    sysctls: dict[str, Any] = field(default_factory=dict)  # side -> SysctlSnapshot
    addrs: int = 1
    rate: float = 0.0
    close: str = "server"

    @property
    def first(self) -> str | None:
        """The limit id of the first finding, ``None`` when nothing was diagnosed."""
        return str(self.findings[0].get("limit")) if self.findings else None

    @property
    def limits(self) -> list[str]:
        """Every limit id diagnosed, in order."""
        return [str(f.get("limit")) for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        """What ``lab run --json`` prints for this pass."""
        return {
            "label": self.label,
            "out_dir": self.out_dir,
            "settings": self.settings,
            "first": self.first,
            "limits": self.limits,
            "stall_s": self.stall_s,
            "tuples": self.tuples.to_json() if self.tuples else None,
            "achieved_rate": (self.summary or {}).get("achieved_rate"),
            "connections": (self.summary or {}).get("connections"),
            "errors": (self.summary or {}).get("errors"),
            "load_exit": self.load_exit,
        }


@dataclass
class LabResult:
    """A scenario's verdict: did the diagnosis name the limit (and did the fix remove it)?"""

    scenario: Scenario
    before: PassResult
    after: PassResult | None = None
    fix_source: str | None = None
    fix_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The expected finding came first (none for the control), and the fix removed it."""
        want = self.scenario.expected
        named = self.before.first == want if want else not self.before.findings
        if self.after is None or want is None:
            return named
        return named and want not in self.after.limits

    def to_json(self) -> dict[str, Any]:
        """What ``lab run --json`` prints."""
        return {
            "scenario": self.scenario.name,
            "expected": self.scenario.expected,
            "ok": self.ok,
            "before": self.before.to_json(),
            "fix": {"source": self.fix_source, "lines": self.fix_lines} if self.after else None,
            "after": self.after.to_json() if self.after else None,
        }


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


def merge(base: Settings, extra: Settings | None) -> Settings:
    """``base`` with ``extra`` applied on top (the fix over the scenario)."""
    if extra is None:
        return base
    sysctls = {side: dict(values) for side, values in base.sysctls.items()}
    for side, values in extra.sysctls.items():
        sysctls.setdefault(side, {}).update(values)
    nft = dict(base.nft)
    for side, names in extra.nft.items():
        nft[side] = (*nft.get(side, ()), *names)
    return Settings(
        sysctls=sysctls,
        host_sysctls={**base.host_sysctls, **extra.host_sysctls},
        nft=nft,
        nft_text={**base.nft_text, **extra.nft_text},
        server={**base.server, **extra.server},
        load={**base.load, **extra.load},
        client_addrs=extra.client_addrs if extra.client_addrs is not None else base.client_addrs,
    )


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


def load_argv(topo: Topology, load: Load, addrs: int, out_dir: str) -> list[str]:
    """``ip netns exec CLIENT python -m tcpchurn run ...`` for one pass."""
    # http://host/ for HTTP; plain host:port for bare TCP (`tcpchurn run --help`).
    target = f"http://{topo.server_v4}/" if load.mode == "http" else f"{topo.server_v4}:80"
    argv = [
        "ip", "netns", "exec", topo.client_ns,
        sys.executable, "-m", "tcpchurn", "run", target,
        "--rate", f"{load.rate:g}", "--duration", f"{load.duration:g}",
        "--close", load.close, "--mode", load.mode, "--timeout", f"{load.timeout:g}",
        "--watch-netns", topo.server_ns, "--out", out_dir, "--quiet",
    ]  # fmt: skip
    if addrs > 1:
        for addr in topo.client_addrs[:addrs]:
            argv += ["--source-ip", addr]
    return argv


# Sets RLIMIT_NOFILE (soft = hard) and execs the load: rlimits survive exec(2).  A
# trampoline rather than Popen(preexec_fn=...), which is unsafe in a process with threads
# (the sampler and Procfs threads run while the load starts).
_RLIMIT_TRAMPOLINE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execvp(sys.argv[2], sys.argv[2:])"
)


def with_rlimit(argv: list[str], nofile: int | None) -> list[str]:
    """``argv`` run with RLIMIT_NOFILE = ``nofile`` (unchanged when ``None``)."""
    if nofile is None:
        return argv
    return [sys.executable, "-c", _RLIMIT_TRAMPOLINE, str(nofile), *argv]


def run_load(
    journal: Journal, topo: Topology, load: Load, addrs: int, out_dir: str
) -> int:
    """Run the client load to completion; returns its exit code."""
    argv = load_argv(topo, load, addrs, out_dir)
    # Inside the namespace, after `ip netns exec`: the limit is the load's alone.
    argv = [*argv[:4], *with_rlimit(argv[4:], load.rlimit_nofile)]
    with open(os.path.join(out_dir, "load-output.log"), "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            close_fds=True,
        )  # fmt: skip
        journal.record("process", pid=proc.pid, start=process_start_time(proc.pid), argv=argv)
        try:
            # The run stops itself after --duration; the margin covers interpreter start,
            # the last --timeout and writing the summary.
            return proc.wait(timeout=load.duration + load.timeout + 60)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise TargetError(
                f"tcpchurn run did not finish; see {out_dir}/load-output.log"
            ) from exc


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file, or ``None`` when it is missing (the load crashed)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_timeline(path: str) -> list[dict[str, Any]]:
    """The lines of a timeline.jsonl (a torn last line is skipped)."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


def findings_of(out_dir: str, summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run's findings: the summary's, or the diagnosis' over the timeline if the
    summary has no ``findings`` key (a run killed before it wrote them)."""
    if summary is None:
        return []
    found = summary.get("findings")
    if isinstance(found, list):
        return found
    try:
        from tcpchurn.diagnose.verdict import diagnose_run
    except ImportError:
        return []
    timeline = read_timeline(os.path.join(out_dir, "timeline.jsonl"))
    result = diagnose_run(timeline, summary)
    return [f if isinstance(f, dict) else f.to_json() for f in result]


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
