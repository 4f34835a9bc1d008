"""``tcpchurn run`` options (strings, as typed) -> a validated :class:`RunConfig`.

Kept apart from ``cli/run.py`` so that the command module stays declarations and
rendering; every value error here is a :class:`BadValue` naming the option and the text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcpchurn.cli.run import parse_duration
from tcpchurn.errors import BadValue
from tcpchurn.kernel.procfs import netns_path
from tcpchurn.load.config import (
    LoadConfig,
    Target,
    default_workers,
    expand_source_ips,
    parse_target,
)
from tcpchurn.runner import DETAIL_EVERY, PARENT_NICE, RunConfig

# The built-in server is only a target until the run starts; its port is known then.
_PLACEHOLDER = Target(host="127.0.0.1", port=1, url="http://127.0.0.1/")


def parse_rate(text: str) -> float:
    """Connections per second: a positive finite number (``1000``, ``2.5``, ``5k``)."""
    raw = text.strip().lower()
    scale = 1000.0 if raw.endswith("k") else 1.0
    try:
        rate = float(raw[:-1] if scale != 1.0 else raw) * scale
    except ValueError:
        raise BadValue("--rate", text, "give connections per second, like 1000 or 5k") from None
    if not math.isfinite(rate) or rate <= 0:
        raise BadValue("--rate", text, "give a positive number of connections per second")
    return rate


def _positive_int(option: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise BadValue(option, value, "give a positive whole number")


def _check_url(option: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise BadValue(option, url, "give the exporter URL, e.g. http://server.example:9464/metrics")


def build_run_config(opts: Mapping[str, Any], default_out: Path) -> RunConfig:
    """Validate the options of ``tcpchurn run`` and build the :class:`RunConfig`."""
    target_text: str | None = opts.get("target")
    rate = parse_rate(str(opts["rate"]))
    duration = parse_duration("--duration", str(opts["duration"]))
    ramp = parse_duration("--ramp", str(opts["ramp"]), allow_zero=True)
    timeout = parse_duration("--timeout", str(opts["timeout"]))
    interval = parse_duration("--interval", str(opts["interval"]))
    for option in ("--workers", "--max-inflight", "--watch-pid", "--detail-every"):
        _positive_int(option, opts.get(option[2:].replace("-", "_")))
    port = opts.get("prometheus_port")
    if port is not None and not 1 <= port <= 65535:
        raise BadValue("--prometheus", port, "give a TCP port between 1 and 65535")
    watched = [o for o in ("watch_netns", "watch_pid", "watch_remote") if opts.get(o) is not None]
    if len(watched) > 1:
        second = watched[1]
        raise BadValue("--" + second.replace("_", "-"), opts[second],
                       "watch one server side: give only one of --watch-netns, --watch-pid, "
                       "--watch-remote")
    if opts.get("watch_netns") is not None or opts.get("watch_pid") is not None:
        # Raises NamespaceNotFound (exit 2) naming the value, before anything starts.
        netns_path(opts.get("watch_netns"), opts.get("watch_pid"))
    if opts.get("watch_remote") is not None:
        _check_url("--watch-remote", str(opts["watch_remote"]))
    target = parse_target(target_text) if target_text is not None else _PLACEHOLDER
    mode = opts.get("mode") or "http"
    close = str(opts["close"])
    workers = opts.get("workers") or default_workers()
    extra: dict[str, Any] = {}
    if opts.get("max_inflight") is not None:
        extra["max_inflight"] = int(opts["max_inflight"])
    if opts.get("seed") is not None:
        extra["seed"] = int(opts["seed"])
    if opts.get("pin") is not None:
        extra["pin"] = bool(opts["pin"])
    load = LoadConfig(
        target=target,
        rate=rate,
        duration=duration,
        ramp=ramp,
        arrival=opts.get("arrival") or "uniform",
        mode=mode,  # type: ignore[arg-type]
        close=close,  # type: ignore[arg-type]
        timeout=timeout,
        source_ips=expand_source_ips(list(opts.get("source_ips") or ())),
        workers=int(workers),
        interval=interval,
        **extra,
    ).validate()
    builtin = None
    if target_text is None:
        from tcpchurn.server import ServerConfig

        # The built-in server closes first exactly when asked to, like a real one would.
        builtin = ServerConfig(host="127.0.0.1", port=0, close="server" if close == "server"
                               else "client")
    return RunConfig(
        load=load,
        builtin_server=builtin,
        watch_netns=opts.get("watch_netns"),
        watch_pid=opts.get("watch_pid"),
        watch_remote=opts.get("watch_remote"),
        out_dir=opts.get("out_dir") or default_out,
        prometheus_port=port,
        html=bool(opts.get("html")),
        quiet=bool(opts.get("quiet")),
        detail_every=int(opts.get("detail_every") or DETAIL_EVERY),
        parent_nice=PARENT_NICE,  # the sampler yields to the load (runner.yield_to_load)
    )
