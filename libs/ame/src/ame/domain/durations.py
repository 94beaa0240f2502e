"""Durations, defined once: plain seconds or Go-style strings ("250ms", "30s", "5m", "1h30m", "1h 30m").

Settings (`Duration`: zero allowed, no upper bound), task timeouts in `ame.yml` and in a run spec
(`parse_timeout`: longer than zero, at most MAX_TIMEOUT_SECONDS) and the CLI's `--timeout` all read durations
here, so a value accepted in one place means the same everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

from ame.domain.limits import MAX_TIMEOUT_SECONDS

__all__ = ["Duration", "DurationError", "Timeout", "format_duration", "parse_duration", "parse_timeout"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FORMS = "use seconds (90) or a string like '250ms', '30s', '5m', '1h30m' (units ms, s, m, h, d)"


class DurationError(ValueError):
    """A duration that cannot be understood or is out of range."""


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string; zero allowed; raises DurationError naming the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DurationError(f"a duration must be a number of seconds or a string like '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "").lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise DurationError(f"invalid duration {value!r}: {_FORMS}") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise DurationError(f"invalid duration {value!r}: a duration must be finite")
    if seconds < 0:
        raise DurationError(f"invalid duration {value!r}: a duration cannot be negative")
    return seconds


def parse_timeout(value: object) -> float:
    """A run's timeout: a duration longer than zero and at most MAX_TIMEOUT_SECONDS (7 days)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise DurationError(f"timeout {value!r} must be longer than zero")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise DurationError(f"timeout {value!r} is longer than the {format_duration(MAX_TIMEOUT_SECONDS)} maximum")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds the way people write them: ``5400`` -> ``"1h30m"``, ``0.5`` -> ``"500ms"``; reads back as the same."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in settings (seconds; zero allowed)."""
Timeout = Annotated[float, BeforeValidator(parse_timeout)]
"""A run's timeout wherever it is written (`ame.yml`, a run spec, `--timeout`): longer than zero, at most 7 days."""
