"""Whether an engine runs its connections through the C hot path (``_pump.c``).

The C path is used when it was built (``pip install`` compiles it; ``optional``: an
install without a compiler still works), the mode is ``http`` (bare ``--mode tcp`` is
rare and stays in Python), the engine runs on the real clock (tests on a fake clock drive
the Python path), and ``TCPCHURN_ENGINE`` is not ``python`` (for A/B measurements and for
the tests that run both paths against the same servers).  Either way the results are the
same: the C path hands every connection that is not plainly fine to conn.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tcpchurn.load.config import LoadConfig

try:
    from tcpchurn.load import _pump
except ImportError:  # built without a C compiler
    _pump = None  # type: ignore[assignment]

#: the environment variable that forces an engine: ``python`` or ``c`` (``auto``: default)
ENV = "TCPCHURN_ENGINE"

CLOSE_MODES = {"server": 0, "client": 1, "reset": 2}  # _pump.CLOSE_*


def engine_kind(cfg: LoadConfig, clock: Callable[[], float] = time.monotonic) -> str:
    """``"c"`` or ``"python"``: which path an engine for ``cfg`` takes (see the module).

    >>> # engine_kind(cfg) -> 'c' after a normal install, for --mode http
    """
    wanted = os.environ.get(ENV, "auto")
    if wanted == "python" or _pump is None or cfg.mode != "http" or clock is not time.monotonic:
        if wanted == "c":
            raise RuntimeError(f"{ENV}=c but the C path cannot run here: "
                               + ("it was not built (no C compiler at install?)"
                                  if _pump is None else "it needs --mode http and the real clock"))
        return "python"
    return "c"


def available() -> bool:
    """Whether the C path was built."""
    return _pump is not None
