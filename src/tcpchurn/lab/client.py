"""The client side of a pass: ``tcpchurn run`` inside the client namespace, as a subprocess.

A subprocess, not a call: the load gets its own interpreter and worker processes (and
its own RLIMIT_NOFILE for ``fd-limit``), and a Ctrl-C reaches it as it would reach a
user's ``tcpchurn run``, so it still writes its summary.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tcpchurn.errors import TargetError
from tcpchurn.lab.journal import Journal, process_start_time
from tcpchurn.lab.scenarios import Load
from tcpchurn.lab.servers import LAB_NICE
from tcpchurn.lab.topology import Topology


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
    argv = [*argv[:4], *LAB_NICE, *with_rlimit(argv[4:], load.rlimit_nofile)]
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
