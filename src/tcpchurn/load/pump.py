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

from tcpchurn.errors import BadValue
from tcpchurn.load.config import LoadConfig

try:
    from tcpchurn.load import _pump
except ImportError:  # built without a C compiler
    _pump = None  # type: ignore[assignment]

#: the environment variable that forces an engine: ``python`` or ``c`` (``auto``: default)
ENV = "TCPCHURN_ENGINE"



def engine_kind(cfg: LoadConfig, clock: Callable[[], float] = time.monotonic) -> str:
    """``"c"`` or ``"python"``: which path an engine for ``cfg`` takes (see the module).

    Raises :class:`BadValue` for a ``TCPCHURN_ENGINE`` that is unknown, or ``c`` where
    the C path cannot run.
    """
    wanted = os.environ.get(ENV, "auto")
    if wanted not in ("auto", "c", "python"):
        raise BadValue(ENV, wanted, "use auto, c or python")
    why_not = ("it was not built (pip install needs a C compiler; reinstall with gcc)"
               if _pump is None else
               "it serves --mode http only" if cfg.mode != "http" else
               "it runs on the real clock only" if clock is not time.monotonic else "")
    if wanted == "c" and why_not:
        raise BadValue(ENV, wanted, f"the C path cannot run: {why_not}")
    return "python" if why_not or wanted == "python" else "c"


def close_mode(close: str) -> int:
    """The C path's code for a ``--close`` mode (its own constants, not a copy here)."""
    assert _pump is not None, "the C path was not built"
    return {"server": _pump.CLOSE_SERVER, "client": _pump.CLOSE_CLIENT,
            "reset": _pump.CLOSE_RESET}[close]


def available() -> bool:
    """Whether the C path was built."""
    return _pump is not None
