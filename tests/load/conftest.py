"""The ``engine`` fixture: run a test once as installed (``auto``: the C hot path, in
both modes, test_pump.py checks that it is the one taken) and once through the pure-Python
path (``TCPCHURN_ENGINE=python``, pump.py), so the two cannot drift apart."""

from __future__ import annotations

import pytest

from tcpchurn.load import pump


@pytest.fixture(params=["auto", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    kind = str(request.param)
    monkeypatch.setenv(pump.ENV, kind)  # inherited by workers and `tcpchurn run` children
    return kind
