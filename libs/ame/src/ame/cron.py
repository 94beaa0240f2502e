"""Cron slots in a time zone, as instants: the arithmetic the spec, the scheduler and the api share.

A cron expression is read on the zone's wall clock. Two days a year that clock is not one-to-one:
* spring forward: a local time in the gap does not exist; its slot fires once, at the change (every slot in the
  gap maps to that instant, so they collapse into one fire);
* fall back: a local time that happens twice fires once, at its first occurrence.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = ["InvalidZone", "jitter_seconds", "next_slot", "zone"]


class InvalidZone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or InvalidZone with a message that says what is wanted."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidZone(
            f"{name!r} is not an IANA time zone; write one such as 'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from None


def _to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The instant of the naive wall-clock time `local` in `tz` (the first one if it repeats, the change if it
    is skipped)."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first
    # In a gap: fold=1 reads it with the offset after the change, fold=0 with the one before; the change lies
    # between. Find it to the second.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


@functools.lru_cache(maxsize=65536)
def next_slot(cron: str, after: datetime, timezone: str = "UTC") -> datetime:
    """The first slot of `cron` in `timezone` strictly after the instant `after` (UTC).

    Cached: a pure function, and schedules due together mostly share their expression and slot (a scheduler
    handling ten thousand every-minute schedules computes the next slot once, not ten thousand times)."""
    tz = zone(timezone)
    local = after.astimezone(tz).replace(tzinfo=None)
    it = croniter(cron, local)
    while True:
        candidate = it.get_next(datetime)
        assert isinstance(candidate, datetime)
        instant = _to_instant(candidate, tz)
        if instant > after:
            return instant


def jitter_seconds(key: str, slot: datetime, jitter: float) -> float:
    """A delay in [0, jitter) that is the same for a (schedule, slot) in every replica and every run."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{key}:{int(slot.timestamp())}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter
