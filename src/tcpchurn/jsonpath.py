"""Reading nested JSON (timeline lines, summaries) where any level may be null.

Kernel variance is normal (STYLE.md rule 5): a sample may lack a table, a remote
exporter may not carry a field.  Every reader of schema dicts goes through :func:`dig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def dig(d: Any, *keys: str | int) -> Any:
    """``d[k1][k2]...``, or ``None`` as soon as a level is missing or null.

    >>> dig({"client": {"listen": [{"queue": 3}]}}, "client", "listen", 0, "queue")
    3
    >>> dig({"client": None}, "client", "sockstat", "tw") is None
    True
    """
    for key in keys:
        if isinstance(key, int):
            if isinstance(d, str | bytes) or not isinstance(d, Sequence) or len(d) <= key:
                return None
            d = d[key]
        else:
            if not isinstance(d, Mapping):
                return None
            d = d.get(key)
    return d
