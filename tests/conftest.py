"""Shared fixtures: root detection and throw-away network namespaces.

Tests send traffic only to loopback or to addresses inside namespaces created here
(198.18.0.0/15, fd00:198:18::/64), and every namespace is removed at teardown.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "root" in item.keywords or "lab" in item.keywords:
            item.add_marker(skip)


def sh(*argv: str, check: bool = True, netns: str | None = None) -> str:
    """Run a command (inside ``netns`` if given) and return its stdout."""
    if netns is not None:
        argv = ("ip", "netns", "exec", netns, *argv)
    out = subprocess.run(argv, check=check, capture_output=True, text=True)
    return out.stdout


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """A factory of fresh network namespaces ``tcpchurn-t-XXXXXX`` with loopback up."""
    made: list[str] = []

    def factory() -> str:
        name = f"tcpchurn-t-{uuid.uuid4().hex[:6]}"
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield factory
    for name in made:
        sh("ip", "netns", "del", name, check=False)
