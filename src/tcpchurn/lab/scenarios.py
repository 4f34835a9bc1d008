"""The lab's scenarios, as data: one row per failure mode, and the control.

Each :class:`Scenario` says how to build the lab (server, client addresses, conntrack,
sysctls per side, host-global settings, nft faults), what load to run, which limit id the
diagnosis must name first, and a fallback fix.  The fix that ``--fix`` applies is the
diagnosis' own (the ``fix`` lines of the first finding, see :mod:`tcpchurn.lab.fixes`);
the ``fix`` here is used only when the finding carries none that the lab can apply.

Durations are short (8-24 s) so the whole set runs in a few minutes on two cores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tcpchurn.errors import BadValue
from tcpchurn.lab.servers import ServerSpec

SIDES = ("client", "server")


@dataclass(frozen=True)
class Load:
    """The ``tcpchurn run`` a scenario drives from the client namespace."""

    rate: float = 1000.0
    duration: float = 10.0
    close: str = "server"  # who closes first: server | client | reset
    mode: str = "http"  # http | tcp
    timeout: float = 3.0  # seconds before a connect/response counts as failed
    rlimit_nofile: int | None = None  # soft = hard limit of the client process


@dataclass(frozen=True)
class Settings:
    """Everything a scenario (or a fix) changes in the lab.

    ``sysctls`` maps a side (``client``/``server``) to ``{name: value}`` inside that
    namespace; ``host_sysctls`` are global ones that exist only in the initial namespace
    (``nf_conntrack_max``); ``nft`` names faults from :mod:`tcpchurn.lab.faults` per side
    (``conntrack``, ``drop_final_ack``, ``notrack``).
    """

    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)
    host_sysctls: dict[str, str] = field(default_factory=dict)
    nft: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nft_text: dict[str, str] = field(default_factory=dict)  # side -> an nft -f ruleset
    server: dict[str, object] = field(default_factory=dict)  # ServerSpec field overrides
    load: dict[str, object] = field(default_factory=dict)  # Load field overrides
    client_addrs: int | None = None

    def describe(self) -> list[str]:
        """The settings as lines a user could type (for the report and the docs)."""
        lines: list[str] = []
        for name, value in self.host_sysctls.items():
            lines.append(f"host: sysctl -w {name}={value}")
        for side, values in self.sysctls.items():
            for name, value in values.items():
                lines.append(f"{side}: sysctl -w {name}='{value}'")
        for side, faults in self.nft.items():
            lines.extend(f"{side}: nft {fault}" for fault in faults)
        for side, text in self.nft_text.items():
            tables = " ".join(re.findall(r"^table\s+\w+\s+\w+", text, re.M))
            lines.append(f"{side}: nft -f <{tables}>")
        lines.extend(f"server: {k}={v}" for k, v in self.server.items())
        lines.extend(f"load: {k}={v}" for k, v in self.load.items())
        if self.client_addrs is not None:
            lines.append(f"client: {self.client_addrs} source addresses")
        return lines


@dataclass(frozen=True)
class Scenario:
    """One failure mode the lab reproduces (or the healthy control)."""

    name: str
    description: str
    server: ServerSpec
    load: Load
    expected: str | None  # limit id that must be the first finding; None: no finding
    settings: Settings = field(default_factory=Settings)
    client_addrs: int = 1
    fix: Settings | None = None
    seed_view: bool = False  # sample /proc/net/tcp and tcp6 line counts (the 2009 view)


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


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="seed-2009",
        description=(
            "The 2009 report: Apache, HTTP/1.0 (Apache closes first), 1,000 new conn/s, "
            "conntrack capped at 16,384 -> the table is full after 16.4 s"
        ),
        server=ServerSpec(kind="apache", backlog=511),
        # Eight client addresses: one address reaches only ~14k distinct 4-tuples to one
        # server ip:port, and starts reusing them after ~3,100 connections (docs/lab.md,
        # "one client address"), which keeps the table below 16,384 and hides the stall.
        # With 8, each address makes ~2,050 connections before the table is full: no
        # 4-tuple is reused and the table grows by exactly R per second.
        client_addrs=8,
        load=Load(rate=1000, duration=24, close="server", timeout=3.0),
        settings=Settings(
            host_sysctls={"net.netfilter.nf_conntrack_max": "16384"},
            nft={"server": ("conntrack",)},
        ),
        expected="conntrack_full",
        fix=Settings(nft={"server": ("notrack",)}),
        seed_view=True,
    ),
    Scenario(
        name="conntrack-full",
        description="Conntrack capped at 2,048 on the server, 500 conn/s: full after ~4 s",
        server=ServerSpec(kind="nginx"),
        client_addrs=4,
        load=Load(rate=500, duration=10, close="server", timeout=2.0),
        settings=Settings(
            host_sysctls={"net.netfilter.nf_conntrack_max": "2048"},
            nft={"server": ("conntrack",)},
        ),
        expected="conntrack_full",
        fix=Settings(nft={"server": ("notrack",)}),
    ),
    Scenario(
        name="conntrack-client",
        description=(
            "The load generator's own host tracks connections (a Docker/NAT host): its "
            "conntrack table, capped at 2,048, is full after ~4 s at 500 conn/s"
        ),
        server=ServerSpec(kind="nginx"),
        client_addrs=4,
        load=Load(rate=500, duration=10, close="server", timeout=2.0),
        settings=Settings(
            host_sysctls={"net.netfilter.nf_conntrack_max": "2048"},
            nft={"client": ("conntrack",)},
        ),
        expected="conntrack_full",
        fix=Settings(nft={"client": ("notrack",)}),
    ),
    Scenario(
        name="ephemeral-ports",
        description=(
            "The client closes first and holds TIME_WAIT; 1,000 ports and tw_reuse off: "
            "connect() fails with EADDRNOTAVAIL after ~2 s at 500 conn/s"
        ),
        server=ServerSpec(kind="builtin", close="client"),
        load=Load(rate=500, duration=8, close="client", timeout=2.0),
        settings=Settings(
            sysctls={
                "client": {
                    "net.ipv4.ip_local_port_range": "40000 40999",
                    "net.ipv4.tcp_tw_reuse": "0",
                }
            }
        ),
        expected="ephemeral_ports",
        fix=Settings(sysctls={"client": {"net.ipv4.ip_local_port_range": "32768 60999"}}),
    ),
    Scenario(
        name="tw-buckets",
        description=(
            "The server closes first; tcp_max_tw_buckets 1,000 on the server: TIME_WAIT "
            "overflows after ~1 s and sockets close without TIME_WAIT"
        ),
        server=ServerSpec(kind="nginx"),
        load=Load(rate=1000, duration=8, close="server", timeout=2.0),
        settings=Settings(sysctls={"server": {"net.ipv4.tcp_max_tw_buckets": "1000"}}),
        expected="tw_buckets",
        fix=Settings(sysctls={"server": {"net.ipv4.tcp_max_tw_buckets": "262144"}}),
    ),
    Scenario(
        name="accept-queue",
        description=(
            "A listener with backlog 8 whose application accepts slowly: the accept queue "
            "overflows (ListenOverflows) and SYNs are dropped"
        ),
        server=ServerSpec(kind="builtin", backlog=8, accept_delay_ms=5.0),
        load=Load(rate=400, duration=8, close="server", timeout=2.0),
        expected="accept_queue",
        # The diagnosis raises the backlog; "accept faster" is a human step that only
        # the lab can take, for its own application.
        fix=Settings(server={"backlog": 4096, "accept_delay_ms": 0.0}),
    ),
    Scenario(
        name="syn-queue",
        description=(
            "Syncookies off and the handshake's final ACK dropped at the server: requests "
            "sit in SYN_RECV until the listener's SYN queue (backlog 64) is full"
        ),
        # tcp_max_syn_backlog stays at its default (2048): were it close to the backlog,
        # tcp_conn_request's "3/4 of max_syn_backlog" clause would drop SYNs first, counted
        # only as ListenDrops, not as TCPReqQFullDrop (net/ipv4/tcp_input.c).
        server=ServerSpec(kind="nginx", backlog=64),
        load=Load(rate=300, duration=8, close="server", timeout=2.0),
        settings=Settings(
            sysctls={"server": {"net.ipv4.tcp_syncookies": "0"}},
            nft={"server": ("drop_final_ack",)},
        ),
        expected="syn_queue",
        fix=Settings(sysctls={"server": {"net.ipv4.tcp_syncookies": "1"}}),
    ),
    Scenario(
        name="fd-limit",
        description=(
            "The client may open 128 files; each bare TCP connection lives 200 ms (the "
            "server closes idle ones): socket() fails with EMFILE"
        ),
        # Each load worker process has the limit: 2,000/s over 2 workers x 0.2 s = 200
        # connections open per worker, above 128 whatever the interpreter's own use.
        server=ServerSpec(kind="builtin", close="server"),
        load=Load(rate=2000, duration=8, close="server", mode="tcp", timeout=2.0,
                  rlimit_nofile=128),
        expected="fd_process",
        fix=Settings(load={"rlimit_nofile": None}),
    ),
    Scenario(
        name="healthy",
        description="The control: nginx, 500 conn/s, no limit lowered: nothing may be diagnosed",
        # Separate IPv4 and IPv6 listeners: a dual-stack one is itself reported (as
        # dual_stack_tw, "nothing to fix"), which a control must not trigger.
        server=ServerSpec(kind="nginx", dual_stack=False),
        load=Load(rate=500, duration=8, close="server", timeout=3.0),
        expected=None,
    ),
)


def by_name(name: str) -> Scenario:
    """The scenario called ``name``, or :class:`BadValue` listing the known ones."""
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    known = ", ".join(s.name for s in SCENARIOS)
    raise BadValue("NAME", name, f"choose one of: {known} (see `tcpchurn lab list`)")
