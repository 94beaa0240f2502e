"""Pure schedule arithmetic: which slots fire, which are missed, and where the schedule goes next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ame_scheduler.planner import next_slot, plan

NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 5, hour, minute, second, tzinfo=UTC)


def test_every_due_slot_within_the_catch_up_window_fires() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 12, 30), catch_up=HOUR)
    assert result.fire == [at(12, 0), at(12, 5), at(12, 10)]
    assert result.missed == []
    assert result.next_fire_at == at(12, 15)


def test_slots_older_than_the_catch_up_window_are_missed_not_fired() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 12, 30), catch_up=timedelta(minutes=6))
    assert result.missed == [at(12, 0), at(12, 5)]
    assert result.fire == [at(12, 10)]
    assert result.next_fire_at == at(12, 15)


def test_a_slot_exactly_at_the_window_edge_still_fires() -> None:
    result = plan("0 * * * *", NOON, now=at(13, 0), catch_up=HOUR)
    assert result.fire == [at(12, 0), at(13, 0)]
    assert result.missed == []
    assert result.next_fire_at == at(14, 0)


def test_a_slot_due_exactly_now_fires() -> None:
    result = plan("0 * * * *", NOON, now=NOON, catch_up=timedelta(0))
    assert result.fire == [NOON]
    assert result.next_fire_at == at(13, 0)


def test_nothing_is_due_before_the_next_slot() -> None:
    result = plan("0 * * * *", NOON, now=at(11, 59, 59), catch_up=HOUR)
    assert result.fire == [] and result.missed == []
    assert result.next_fire_at == NOON


def test_a_scheduler_down_for_a_week_fires_only_the_recent_slots() -> None:
    start = NOON - timedelta(days=7)
    result = plan("0 */6 * * *", start, now=at(12, 30), catch_up=timedelta(hours=7))
    assert result.fire == [at(6, 0), at(12, 0)]
    assert len(result.missed) == 7 * 4 - 1
    assert result.missed[0] == start
    assert result.next_fire_at == at(18, 0)


def test_limit_bounds_one_pass_and_the_next_pass_resumes_where_it_stopped() -> None:
    start = NOON - timedelta(days=1)
    now = NOON
    first = plan("* * * * *", start, now=now, catch_up=timedelta(minutes=30), limit=100)
    assert len(first.fire) + len(first.missed) == 100
    assert first.fire == [] and first.missed[0] == start
    assert first.next_fire_at == start + timedelta(minutes=100)

    slots = [*first.missed, *first.fire]
    cursor = first.next_fire_at
    while cursor <= now:
        more = plan("* * * * *", cursor, now=now, catch_up=timedelta(minutes=30), limit=100)
        slots += [*more.missed, *more.fire]
        cursor = more.next_fire_at
    # Every minute from the start up to now is accounted for exactly once, in order.
    assert slots == [start + timedelta(minutes=i) for i in range(24 * 60 + 1)]
    assert cursor == now + timedelta(minutes=1)


@pytest.mark.parametrize("limit", [1, 2])
def test_small_limits(limit: int) -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 12), catch_up=HOUR, limit=limit)
    assert result.fire == [at(12, 0), at(12, 5)][:limit]
    assert result.next_fire_at == [at(12, 5), at(12, 10)][limit - 1]


def test_next_slot_is_strictly_after_and_in_utc() -> None:
    assert next_slot("0 * * * *", at(12, 30)) == at(13, 0)
    assert next_slot("0 * * * *", at(13, 0)) == at(14, 0)
    paris = timezone(timedelta(hours=1))
    slot = next_slot("0 * * * *", datetime(2026, 1, 5, 13, 30, tzinfo=paris))
    assert slot == at(13, 0)
    assert slot.utcoffset() == timedelta(0)


def test_next_slot_evaluates_cron_fields_in_utc() -> None:
    # "09:00 every day" means 09:00 UTC, whatever the offset of the time passed in.
    tokyo = timezone(timedelta(hours=9))
    assert next_slot("0 9 * * *", datetime(2026, 1, 5, 10, 0, tzinfo=tokyo)) == at(9, 0)
    assert next_slot("0 9 * * *", at(9, 0)) == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


def test_cron_with_day_of_week() -> None:
    # 2026-01-05 is a Monday.
    monday_after = next_slot("30 8 * * 1", at(9, 0))
    assert monday_after == datetime(2026, 1, 12, 8, 30, tzinfo=UTC)
