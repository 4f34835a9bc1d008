"""docs/limits.md is generated from the rules table and must match it."""

from __future__ import annotations

from pathlib import Path

from tcpchurn.diagnose.docs import render_limits_md
from tcpchurn.diagnose.rules import LIMIT_IDS, RULES

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "limits.md"
DESIGN_IDS = {"conntrack_full", "ephemeral_ports", "bind_port_conflict", "tw_buckets",
              "accept_queue", "syn_queue", "orphans", "tcp_mem", "fd_process", "fd_system",
              "netdev_backlog", "generator_saturated", "server_refused", "server_slow",
              "unreachable"}


def test_limits_md_is_in_sync_with_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render_limits_md(), \
        "docs/limits.md is stale: run `python scripts/gen_limits_md.py`"


def test_table_has_a_row_for_every_design_limit() -> None:
    assert DESIGN_IDS <= set(LIMIT_IDS)
    assert len(LIMIT_IDS) == len(set(LIMIT_IDS))
    for r in RULES:
        assert r.title and r.signals and r.arithmetic and r.explanation and r.sides
        assert set(r.yields_to) <= set(LIMIT_IDS)
