"""Pure schedule arithmetic: given a schedule, the next slot not yet handled and the clock, which slots fire.

Slots are read on the schedule's zone's wall clock (`ame.cron`). A slot is on time while the clock is within
`late_after` of it (a tick's lag); older slots were missed while no scheduler ran, and the catch-up policy says
what they do: `none` skips them, `latest` fires the most recent of them (unless an on-time slot fires anyway),
`all` fires each, at most `cap` of them (the most recent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ame import cron


@dataclass(frozen=True)
class Plan:
    fire: list[datetime]
    missed: list[datetime]
    next_fire_at: datetime
    next_due_at: datetime


def next_slot(expression: str, after: datetime, timezone: str = "UTC") -> datetime:
    return cron.next_slot(expression, after, timezone)


def plan(
    expression: str,
    next_fire_at: datetime,
    now: datetime,
    *,
    timezone: str = "UTC",
    catch_up: str = "none",
    late_after: timedelta = timedelta(seconds=60),
    cap: int = 100,
    jitter: Callable[[datetime], float] = lambda _slot: 0.0,
    limit: int = 10_000,
) -> Plan:
    """Slots from `next_fire_at` whose due time (slot + its jitter) has come, split into fire and missed."""
    on_time: list[datetime] = []
    late: list[datetime] = []
    slot = next_fire_at
    seen = 0
    while slot + timedelta(seconds=jitter(slot)) <= now and seen < limit:
        (on_time if now - slot <= late_after else late).append(slot)
        slot = next_slot(expression, slot, timezone)
        seen += 1
    if seen >= limit:
        # Down for longer than `limit` slots: what is left is late anyway; start again from now.
        while slot <= now - late_after:
            slot = next_slot(expression, now - late_after, timezone)
    if catch_up == "all":
        caught, skipped = late[-cap:] if cap > 0 else [], late[: max(0, len(late) - cap)]
    elif catch_up == "latest" and late and not on_time:
        caught, skipped = late[-1:], late[:-1]
    else:
        caught, skipped = [], late
    return Plan(
        fire=caught + on_time,
        missed=skipped,
        next_fire_at=slot,
        next_due_at=slot + timedelta(seconds=jitter(slot)),
    )
