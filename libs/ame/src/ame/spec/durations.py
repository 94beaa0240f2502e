"""Task timeouts written as seconds (``90``) or as a duration (``30s``, ``5m``, ``1h30m``)."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
# A week is already far beyond any sensible single run; larger values are almost always a
# unit slip (seconds written where minutes were meant, or the reverse).
MAX_TIMEOUT_SECONDS = 7 * 86400.0


class DurationError(ValueError):
    """A timeout that cannot be understood."""


def parse_duration_seconds(value: object) -> float:
    """Parse ``90``, ``"90"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or ``"1h 30m"`` into seconds.

    Raises:
        DurationError: malformed, zero, negative or longer than a week.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DurationError(f"expected seconds or a duration such as 30s, 5m or 1h30m, got {value!r}")
    text = str(value).strip().replace(" ", "").lower()
    if _NUMBER.match(text):
        seconds = float(text)
    elif _WHOLE.match(text):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    else:
        raise DurationError(f"{value!r} is not a duration: use seconds (90) or units s, m, h, d (30s, 5m, 1h30m)")
    if seconds <= 0:
        raise DurationError(f"{value!r} must be longer than zero")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise DurationError(f"{value!r} is longer than the 7 day maximum")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way people write them: ``5400`` -> ``"1h30m"``, ``0.5`` -> ``"500ms"``."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
