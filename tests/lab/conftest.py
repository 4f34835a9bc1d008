"""Lab test fixtures: the host must be identical before and after every lab test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.hoststate import HostState, snapshot


@pytest.fixture
def host_unchanged() -> Iterator[HostState]:
    """Snapshot the host, run the test, and fail if anything the lab touches changed."""
    before = snapshot()
    yield before
    after = snapshot()
    assert after == before, "the lab left state behind on the host"
