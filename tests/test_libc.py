"""The one C-library handle (tcpchurn.libc)."""

from __future__ import annotations

import os

from tcpchurn.libc import libc


def test_libc_is_this_process_s_own_and_loaded_once() -> None:
    assert libc().getpid() == os.getpid()
    assert libc() is libc()
