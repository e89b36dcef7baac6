"""Durations as people write them in specs: ``500ms``, ``30s``, ``1m``,
``1h30m``; a bare number is seconds. Parsed to float seconds."""

from __future__ import annotations

import re
from typing import Any

_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    text = str(value).strip()
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 1m, 1h30m)")
    return sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Short human form: ``90`` -> ``1m30s``; ``0.5`` -> ``500ms``."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return out or "0s"


def timeout_problem(value: Any, *, most: float, subject: str, zero_ok: bool = False) -> str | None:
    """Why ``value`` is refused as the timeout of a ``subject`` (provider, receiver, hook) that
    runs while every release's pass waits: not a duration, 0 (unless ``zero_ok``), negative,
    NaN, or over ``most`` seconds. None: it is fine. The one check for every such timeout."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return str(exc)
    if seconds == 0 and not zero_ok:
        return "a timeout of 0 would fail every call"
    if not 0 <= seconds <= most:   # also NaN and inf
        return (f"timeout {value} is over the maximum {format_duration(most)}: a slow {subject} must not stall "
                "every release's pass")
    return None
