"""Human durations ("30m", "7d", "1h30m") as used in config files and CLI options."""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse a duration made of number+unit parts.

    >>> parse_duration("30m")
    datetime.timedelta(seconds=1800)
    >>> parse_duration("1h30m").total_seconds()
    5400.0
    """
    cleaned = text.strip().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(
            f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. '30m' or '7d'"
        )
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """The shortest exact form of a duration.

    >>> format_duration(timedelta(minutes=90))
    '90m'
    """
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"
