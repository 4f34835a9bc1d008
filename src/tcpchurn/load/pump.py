"""Whether an engine runs its connections through the C hot path (``_pump.c``).

The C path is used when it was built (``pip install`` compiles it; ``optional``: an
install without a compiler still works), the engine runs on the real clock (tests on a
fake clock drive the Python path), and ``TCPCHURN_ENGINE`` is not ``python`` (for A/B
measurements and for the tests that run both paths against the same servers), in both
modes.  Either way the results are the same: the C path hands every connection that is
not plainly fine to conn.py.
"""

from __future__ import annotations

import math
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
#: for A/B measurements (bench/): how overdue another worker's connection must be before
#: a worker starts it, in seconds (engine.STEAL_LAG_S; ``inf``: never)
STEAL_ENV = "TCPCHURN_STEAL_LAG_S"
#: for A/B measurements (bench/): ``1`` turns on the coalesced wake-ups of the C path,
#: ``0`` off (engine.COALESCE: on by default, see there)
COALESCE_ENV = "TCPCHURN_COALESCE"


def engine_kind(cfg: LoadConfig, clock: Callable[[], float] = time.monotonic) -> str:
    """``"c"`` or ``"python"``: which path an engine for ``cfg`` takes (see the module).

    Raises :class:`BadValue` for a ``TCPCHURN_ENGINE`` that is unknown, or ``c`` where
    the C path cannot run, and for a ``TCPCHURN_STEAL_LAG_S`` that is no number of seconds
    or a ``TCPCHURN_COALESCE`` other than 0 or 1 (checked here, where the runner asks
    before any worker starts).
    """
    steal_lag_s(0.0)
    coalesce(True)
    wanted = os.environ.get(ENV, "auto")
    if wanted not in ("auto", "c", "python"):
        raise BadValue(ENV, wanted, "use auto, c or python")
    why_not = ("it was not built (pip install needs a C compiler; reinstall with gcc)"
               if _pump is None else
               "it runs on the real clock only" if clock is not time.monotonic else "")
    if wanted == "c" and why_not:
        raise BadValue(ENV, wanted, f"the C path cannot run: {why_not}")
    return "python" if why_not or wanted == "python" else "c"


def steal_lag_s(default: float) -> float:
    """``TCPCHURN_STEAL_LAG_S`` if set, else ``default``; :class:`BadValue` if it is not a
    number of seconds >= 0 (``inf`` allowed)."""
    text = os.environ.get(STEAL_ENV)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also false for nan
        raise BadValue(STEAL_ENV, text, "give seconds >= 0, or inf to never take over")
    return value


def coalesce(default: bool) -> bool:
    """``TCPCHURN_COALESCE`` (``0`` or ``1``) if set, else ``default``; :class:`BadValue`
    for anything else."""
    text = os.environ.get(COALESCE_ENV)
    if not text:
        return default
    if text not in ("0", "1"):
        raise BadValue(COALESCE_ENV, text, "use 1 to coalesce wake-ups, 0 not to")
    return text == "1"


def board_bytes(count: int) -> int:
    """The size of the lanes of ``count`` workers (_pump.c), for a memfd or an mmap."""
    assert _pump is not None, "the C path was not built"
    return count * _pump.LANE_BYTES


def lane_ring() -> int:
    """How many due times one worker's lane holds (_pump.c)."""
    assert _pump is not None, "the C path was not built"
    return _pump.LANE_RING


def close_mode(close: str) -> int:
    """The C path's code for a ``--close`` mode (its own constants, not a copy here)."""
    assert _pump is not None, "the C path was not built"
    return {"server": _pump.CLOSE_SERVER, "client": _pump.CLOSE_CLIENT,
            "reset": _pump.CLOSE_RESET}[close]


def available() -> bool:
    """Whether the C path was built."""
    return _pump is not None
