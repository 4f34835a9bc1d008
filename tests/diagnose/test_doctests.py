"""The examples in the diagnose modules' docstrings run (the project's pytest does not
collect doctests by default)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["series", "sysctls", "verdict", "forecast", "fixes", "audit", "doctor"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"tcpchurn.diagnose.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
