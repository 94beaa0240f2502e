"""Pure schedule arithmetic: given a cron expression, the last slot handled and the clock, which slots are due.

Slots are evaluated in UTC. Slots older than the catch-up window are reported as missed rather than fired,
so a scheduler that was down for a week does not start a week of runs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter


@dataclass(frozen=True)
class Plan:
    fire: list[datetime]
    missed: list[datetime]
    next_fire_at: datetime


def next_slot(cron: str, after: datetime) -> datetime:
    value = croniter(cron, after.astimezone(UTC)).get_next(datetime)
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def plan(cron: str, next_fire_at: datetime, now: datetime, catch_up: timedelta, limit: int = 100) -> Plan:
    """Slots from `next_fire_at` up to `now`: those within `catch_up` of now fire, older ones are missed."""
    fire: list[datetime] = []
    missed: list[datetime] = []
    slot = next_fire_at
    while slot <= now and len(fire) + len(missed) < limit:
        (fire if now - slot <= catch_up else missed).append(slot)
        slot = next_slot(cron, slot)
    return Plan(fire=fire, missed=missed, next_fire_at=slot)
