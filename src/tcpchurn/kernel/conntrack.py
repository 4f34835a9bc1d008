"""Conntrack: count, max, buckets, TCP timeouts and the per-CPU statistics, per netns.

Sources (all readable without root, KERNEL.md section 0):

* ``/proc/sys/net/netfilter/nf_conntrack_{count,max,buckets}`` and every
  ``nf_conntrack_tcp_timeout_*``.  ``count`` is per netns; ``max`` is one global value
  that every netns compares its own count against (``nf_conntrack_core.c``
  ``__nf_conntrack_alloc``).
* ``/proc/net/stat/nf_conntrack``: one row per possible CPU, in hex, with a header
  naming the columns (``nf_conntrack_standalone.c`` ``ct_cpu_seq_show``)::

      entries  clashres found new invalid ignore delete chainlength insert ...
      00000c8a  00000000 00000001 00000000 00000003 00000000 00000000 00000000 000003e8 ...

  Columns are summed over CPUs **except** ``entries``, which every row repeats (it is
  ``nf_conntrack_count(net)``, not a per-CPU value) and is taken once.  ``new``,
  ``ignore`` and ``delete`` are always 0 on current kernels and left out of ``stat``;
  ``chainlength`` is the "chain too long" counter.  Columns are found by header name,
  so older layouts (``searched``, ``delete_list``) parse too and missing ones are None.

Without the ``nf_conntrack`` module none of these files exist: ``loaded`` is False and
every value is None.  Tracking only happens when some rule uses it (KERNEL.md 1.A:
1000 connections with the module loaded and no rules created 0 entries), so ``active``
is ``count > 0`` per sample; :func:`ruleset_uses_conntrack` inspects ``nft list ruleset``
when asked (a subprocess: never per second).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from tcpchurn.errors import MissingTool, NotPermitted, ParseError
from tcpchurn.kernel.counters import counter_delta
from tcpchurn.kernel.procfs import Procfs

STAT = "net/stat/nf_conntrack"
SYS = "sys/net/netfilter/"

#: The ``stat`` keys of docs/schema.md section 1, in the kernel's column names.
STAT_KEYS: tuple[str, ...] = (
    "found", "invalid", "insert", "insert_failed", "drop", "early_drop", "icmp_error",
    "expect_new", "expect_create", "expect_delete", "search_restart", "clashres",
    "chainlength",
)

#: TCP states with a ``nf_conntrack_tcp_timeout_<state>`` sysctl (nf_conntrack-sysctl.rst).
TCP_TIMEOUTS: tuple[str, ...] = (
    "syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack",
    "time_wait", "close", "max_retrans", "unacknowledged",
)


@dataclass(frozen=True)
class ConntrackStat:
    """``/proc/net/stat/nf_conntrack`` summed over CPUs."""

    entries: int | None
    columns: Mapping[str, int] = field(default_factory=dict)  # every column but entries

    def to_json(self) -> dict[str, int | None]:
        """The ``stat`` object of the schema: :data:`STAT_KEYS`, None if not printed."""
        return {k: self.columns.get(k) for k in STAT_KEYS}


@dataclass(frozen=True)
class Conntrack:
    """One sample of conntrack in one namespace."""

    loaded: bool
    count: int | None
    max: int | None
    buckets: int | None
    timeouts: Mapping[str, int | None]
    stat: ConntrackStat | None
    ruleset_uses_ct: bool | None = None  # None: not inspected this sample

    @property
    def active(self) -> bool:
        """Tracking happens here: entries exist, or a rule that tracks was seen."""
        return bool(self.count) or bool(self.ruleset_uses_ct)

    def to_json(self, earlier: Conntrack | None = None) -> dict[str, object]:
        """The ``conntrack`` object of docs/schema.md section 1 (``stat_delta`` vs earlier)."""
        return {
            "loaded": self.loaded,
            "active": self.active,
            "count": self.count,
            "max": self.max,
            "buckets": self.buckets,
            "timeouts": dict(self.timeouts),
            "stat": self.stat.to_json() if self.stat is not None else None,
            "stat_delta": stat_delta(earlier.stat, self.stat) if earlier is not None else None,
        }


def stat_delta(
    earlier: ConntrackStat | None, later: ConntrackStat | None
) -> dict[str, int | None] | None:
    """Per-column increase between two samples (None when either lacks the file)."""
    if earlier is None or later is None:
        return None
    out: dict[str, int | None] = {}
    for key in STAT_KEYS:
        a, b = earlier.columns.get(key), later.columns.get(key)
        out[key] = counter_delta(a, b) if a is not None and b is not None else None
    return out


def parse_conntrack_stat(text: str, path: str = "/proc/net/stat/nf_conntrack") -> ConntrackStat:
    """Sum the per-CPU hex rows by header name; ``entries`` is taken from the first row.

    >>> s = parse_conntrack_stat("entries insert drop\\n0000000a 00000002 00000000\\n"
    ...                          "0000000a 00000003 00000001\\n")
    >>> s.entries, dict(s.columns)
    (10, {'insert': 5, 'drop': 1})
    """
    lines = text.splitlines()
    if not lines or not lines[0].split() or lines[0].split()[0] != "entries":
        raise ParseError(path, 1, lines[0] if lines else "", "expected a header 'entries ...'")
    names = lines[0].split()
    sums = dict.fromkeys(names[1:], 0)
    entries: int | None = None
    for lineno, line in enumerate(lines[1:], 2):
        words = line.split()
        if not words:
            continue
        if len(words) != len(names):
            raise ParseError(path, lineno, line, f"{len(words)} columns for {len(names)} names")
        try:
            values = [int(w, 16) for w in words]
        except ValueError:
            raise ParseError(path, lineno, line, "columns must be hex") from None
        if entries is None:
            entries = values[0]
        for name, value in zip(names[1:], values[1:], strict=True):
            sums[name] += value
    for always_zero in ("new", "ignore", "delete"):
        sums.pop(always_zero, None)
    return ConntrackStat(entries, sums)


def _int(text: str | None, path: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ParseError(path, 1, text.rstrip("\n"), "expected an integer") from None


def parse_conntrack(files: Mapping[str, str | None], ruleset_uses_ct: bool | None = None
                    ) -> Conntrack:
    """Build a sample from ``{"sys/net/netfilter/nf_conntrack_count": "12\\n", ...}``.

    Keys are paths relative to ``/proc`` (see :func:`wanted_files`); a missing key or a
    None value means the kernel does not have that file.
    """
    def value(name: str) -> int | None:
        return _int(files.get(SYS + name), "/proc/" + SYS + name)

    stat_text = files.get(STAT)
    count = value("nf_conntrack_count")
    return Conntrack(
        loaded=count is not None or stat_text is not None,
        count=count,
        max=value("nf_conntrack_max"),
        buckets=value("nf_conntrack_buckets"),
        timeouts={s: value(f"nf_conntrack_tcp_timeout_{s}") for s in TCP_TIMEOUTS},
        stat=parse_conntrack_stat(stat_text, "/proc/" + STAT) if stat_text is not None else None,
        ruleset_uses_ct=ruleset_uses_ct,
    )


def wanted_files() -> tuple[str, ...]:
    """Every path (relative to /proc) that :func:`parse_conntrack` reads."""
    names = ["nf_conntrack_count", "nf_conntrack_max", "nf_conntrack_buckets"]
    names += [f"nf_conntrack_tcp_timeout_{s}" for s in TCP_TIMEOUTS]
    return (*(SYS + n for n in names), STAT)


# Expressions that make nftables track connections: `ct ...` matches, NAT statements
# (NAT needs conntrack), and `flow add` offload.  `notrack` alone does not track.
_CT_RULE = re.compile(r"\bct\s+(state|status|mark|direction|zone|count|original|reply|"
                      r"expiration|helper|label|id)\b|\b(masquerade|snat|dnat|redirect)\b|"
                      r"\bflow\s+add\b")


def ruleset_uses_conntrack(ruleset: str) -> bool:
    """True when an ``nft list ruleset`` text contains a rule that needs conntrack.

    >>> ruleset_uses_conntrack("table inet f { chain o { ct state new counter } }")
    True
    >>> ruleset_uses_conntrack("table inet r { chain o { tcp dport 80 notrack } }")
    False
    """
    return _CT_RULE.search(ruleset) is not None


def nft_ruleset(procfs: Procfs) -> str:
    """``nft list ruleset`` as seen in ``procfs``'s namespace; root needed.

    The child is started from the thread that entered the namespace, so it inherits that
    namespace (``clone(2)`` copies the calling thread's ``nsproxy``): this works for
    ``--netns`` and ``--pid`` alike, like ``ip netns exec`` does.  Only on request
    (``tcpchurn doctor``, the start of a run): a subprocess costs milliseconds.
    """
    argv = ["nft", "list", "ruleset"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)

    try:
        out = procfs.call(run)
    except FileNotFoundError as exc:
        raise MissingTool("nft", "apt-get install nftables") from exc
    if out.returncode != 0:
        raise NotPermitted(f"nft list ruleset failed ({out.stderr.strip()}): run as root")
    return out.stdout


def read_conntrack(procfs: Procfs | None = None, *, ruleset: bool = False) -> Conntrack:
    """Read conntrack in ``procfs``'s namespace; ``ruleset=True`` also runs nft (slow)."""
    procfs = procfs if procfs is not None else Procfs()
    files = {rel: procfs.read_optional(rel) for rel in wanted_files()}
    uses: bool | None = None
    if ruleset and procfs.is_live:
        uses = ruleset_uses_conntrack(nft_ruleset(procfs))
    return parse_conntrack(files, uses)
