"""What to load and how: the target, the rate, the close mode, the source addresses.

Everything here is validated once, at the edge, and raises :class:`BadValue` naming the
text that was wrong; the engine then trusts the config.  ``LoadConfig`` is frozen and
picklable because each worker process receives a copy (STYLE.md rule 8).

>>> t = parse_target("http://localhost:8080/x")
>>> (t.host, t.port, t.path, t.family, t.hostname)
('127.0.0.1', 8080, '/x', 4, 'localhost:8080')
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tcpchurn.errors import BadValue

Arrival = Literal["uniform", "poisson"]
Mode = Literal["http", "tcp"]
Close = Literal["server", "client", "reset"]

ARRIVALS: tuple[Arrival, ...] = ("uniform", "poisson")
MODES: tuple[Mode, ...] = ("http", "tcp")
CLOSES: tuple[Close, ...] = ("server", "client", "reset")

#: --source-ip may expand CIDRs, but never into more sockets-worth of addresses than this.
MAX_SOURCE_IPS = 1024


@dataclass(frozen=True)
class Target:
    """Where connections go: an IP literal and port (names are resolved once, up front)."""

    host: str
    port: int
    path: str = "/"
    family: int = 4
    hostname: str = ""
    url: str = ""

    @property
    def sockaddr(self) -> tuple[str, int]:
        """The address tuple for ``socket.connect`` (2-tuple works for AF_INET6 too)."""
        return (self.host, self.port)

    @property
    def af(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return socket.AF_INET6 if self.family == 6 else socket.AF_INET


def _port(text: str, port_text: str | None, default: int | None) -> int:
    if port_text is None or port_text == "":
        if default is None:
            raise BadValue("target", text, "give a port, e.g. 127.0.0.1:8080")
        return default
    if not port_text.isdigit():
        raise BadValue("target", text, f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadValue("target", text, f"port {port} is out of range 1-65535")
    return port


def _resolve(text: str, host: str) -> tuple[str, int]:
    """An IP literal and its family; a name is resolved once (first address wins)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return str(ip), ip.version
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadValue("target", text, f"cannot resolve host {host!r} ({exc})") from exc
    for family, _, _, _, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return str(addr[0]), 6 if family == socket.AF_INET6 else 4
    raise BadValue("target", text, f"host {host!r} has no IPv4 or IPv6 address")


def parse_target(text: str) -> Target:
    """Parse ``http://host[:port][/path]``, ``host:port`` or ``[v6addr]:port``.

    >>> parse_target("[::1]:80").url
    'http://[::1]:80/'
    """
    raw = text.strip()
    if not raw:
        raise BadValue("target", text, "give a URL such as http://127.0.0.1:8080/")
    if "://" in raw:
        scheme = raw.split("://", 1)[0].lower()
        if scheme == "https":
            raise BadValue("target", text, "https is not supported: give an http:// URL")
        if scheme != "http":
            raise BadValue("target", text, f"scheme {scheme!r} is not supported: use http://")
        default_port: int | None = 80
    else:
        raw = "http://" + raw
        default_port = None
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise BadValue("target", text, f"not a URL ({exc})") from exc
    netloc = parts.netloc
    if "@" in netloc:
        raise BadValue("target", text, "user:password@ in the URL is not supported")
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadValue("target", text, "bad [IPv6] address: use e.g. [::1]:8080")
        port_text: str | None = rest[1:] if rest else None
    elif netloc.count(":") > 1:
        raise BadValue("target", text, "put an IPv6 address in brackets: [::1]:8080")
    else:
        host, sep, port_text = netloc.partition(":")
        if not sep:
            port_text = None
    if not host:
        raise BadValue("target", text, "no host: give e.g. http://127.0.0.1:8080/")
    port = _port(text, port_text, default_port)
    ip, family = _resolve(text, host)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    shown = f"[{ip}]" if family == 6 else ip
    hostname = host if ":" not in host else f"[{host}]"
    if port != 80:
        hostname = f"{hostname}:{port}"
    return Target(
        host=ip, port=port, path=path, family=family, hostname=hostname,
        url=f"http://{shown}:{port}{path}",
    )


def default_workers() -> int:
    """One worker process per CPU this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    """One load: ``rate`` new connections per second to ``target`` for ``duration`` s.

    ``ramp`` seconds of linear rise from 0 to ``rate`` come first (inside ``duration``).
    ``max_inflight`` bounds open connections per run (split among workers); a due
    connection that would exceed it waits for one to end and starts ``late`` (its
    latencies counted from its schedule); one that waited more than ``max(timeout, 1 s)``
    is ``skipped`` and counted.  Never silently delayed or dropped.
    ``pin``: each worker runs on a CPU of its own (workers.worker_cpus says when).
    """

    target: Target
    rate: float
    duration: float
    ramp: float = 0.0
    arrival: Arrival = "uniform"
    mode: Mode = "http"
    close: Close = "server"
    timeout: float = 5.0
    source_ips: tuple[str, ...] = ()
    workers: int = 1
    max_inflight: int = 50_000
    interval: float = 1.0
    seed: int | None = None
    pin: bool = True

    def validate(self) -> LoadConfig:
        """Raise :class:`BadValue` for the first impossible value; return ``self``."""
        checks: list[tuple[bool, str, object, str]] = [
            (self.rate > 0, "--rate", self.rate, "give a positive number of connections/s"),
            (self.rate <= 10_000_000, "--rate", self.rate, "at most 10,000,000 per second"),
            (self.duration > 0, "--duration", self.duration, "give a positive number of seconds"),
            (0 <= self.ramp <= self.duration, "--ramp", self.ramp,
             "give seconds between 0 and --duration"),
            (self.arrival in ARRIVALS, "--arrival", self.arrival, "use uniform or poisson"),
            (self.mode in MODES, "--mode", self.mode, "use http or tcp"),
            (self.close in CLOSES, "--close", self.close, "use server, client or reset"),
            (self.timeout > 0, "--timeout", self.timeout, "give a positive number of seconds"),
            (1 <= self.workers <= 256, "--workers", self.workers, "give 1 to 256 processes"),
            (self.max_inflight >= self.workers, "--max-inflight", self.max_inflight,
             "give at least one connection per worker"),
            (0.01 <= self.interval <= 3600, "--interval", self.interval,
             "give seconds between 0.01 and 3600"),
        ]
        for ok, option, value, hint in checks:
            if not ok:
                raise BadValue(option, value, hint)
        for ip in self.source_ips:
            fam = ipaddress.ip_address(ip).version
            if fam != self.target.family:
                raise BadValue("--source-ip", ip,
                               f"IPv{fam} source for an IPv{self.target.family} target")
        return self

    def replace(self, **changes: object) -> LoadConfig:
        """A copy with some fields changed (``dataclasses.replace`` with types erased)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _check_local(ip: str) -> None:
    """Bind ``ip`` to prove it is assigned here (no port is reserved: port 0, closed)."""
    version = ipaddress.ip_address(ip).version
    af = socket.AF_INET6 if version == 6 else socket.AF_INET
    with socket.socket(af, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, 0))
        except OSError as exc:
            raise BadValue(
                "--source-ip", ip,
                f"unknown source address {ip}: not assigned to any interface here ({exc.strerror})",
            ) from exc


def expand_source_ips(values: Sequence[str]) -> tuple[str, ...]:
    """Expand IPs and CIDRs into a list of distinct local addresses (at most 1024).

    >>> expand_source_ips(["127.0.0.1/31"])
    ('127.0.0.0', '127.0.0.1')
    """
    out: list[str] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise BadValue("--source-ip", item, "give an IP address or a CIDR") from exc
            if net.num_addresses > MAX_SOURCE_IPS or len(out) + net.num_addresses > (
                MAX_SOURCE_IPS
            ):
                raise BadValue("--source-ip", item, f"at most {MAX_SOURCE_IPS} addresses")
            hosts = [str(a) for a in net] if "/" in item else [str(net.network_address)]
            for ip in hosts:
                if ip not in out:
                    out.append(ip)
    for ip in out:
        _check_local(ip)
    return tuple(out)
