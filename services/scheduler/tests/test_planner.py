"""Pure schedule arithmetic: which slots fire, which are missed, where the schedule goes next; zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ame_scheduler.planner import next_slot, plan

NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PARIS = ZoneInfo("Europe/Paris")


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 5, hour, minute, second, tzinfo=UTC)


def test_every_on_time_slot_fires() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 12, 30), late_after=timedelta(hours=1))
    assert result.fire == [at(12, 0), at(12, 5), at(12, 10)]
    assert result.missed == []
    assert result.next_fire_at == at(12, 15) == result.next_due_at


def test_catch_up_none_skips_the_slots_missed_during_an_outage() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 15, 30), late_after=MINUTE, catch_up="none")
    assert result.missed == [at(12, 0), at(12, 5), at(12, 10)]
    assert result.fire == [at(12, 15)]


def test_catch_up_latest_fires_the_most_recent_missed_slot_only() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 13), late_after=MINUTE, catch_up="latest")
    assert result.missed == [at(12, 0), at(12, 5)]
    assert result.fire == [at(12, 10)]
    assert result.next_fire_at == at(12, 15)


def test_catch_up_latest_fires_nothing_late_when_a_slot_is_on_time() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 15, 30), late_after=MINUTE, catch_up="latest")
    assert result.missed == [at(12, 0), at(12, 5), at(12, 10)]
    assert result.fire == [at(12, 15)]


def test_catch_up_all_fires_each_missed_slot_up_to_the_cap() -> None:
    result = plan("*/5 * * * *", NOON, now=at(12, 13), late_after=MINUTE, catch_up="all", cap=10)
    assert result.fire == [at(12, 0), at(12, 5), at(12, 10)] and result.missed == []
    capped = plan("*/5 * * * *", NOON, now=at(12, 13), late_after=MINUTE, catch_up="all", cap=2)
    assert capped.missed == [at(12, 0)] and capped.fire == [at(12, 5), at(12, 10)]


def test_a_slot_due_exactly_now_fires() -> None:
    result = plan("0 * * * *", NOON, now=NOON, late_after=timedelta(0))
    assert result.fire == [NOON]
    assert result.next_fire_at == at(13, 0)


def test_nothing_is_due_before_the_next_slot() -> None:
    result = plan("0 * * * *", NOON, now=at(11, 59, 59))
    assert result.fire == [] and result.missed == []
    assert result.next_fire_at == NOON


def test_jitter_delays_a_slot_until_its_due_time() -> None:
    early = plan("0 * * * *", NOON, now=at(12, 0, 20), jitter=lambda _slot: 30.0)
    assert early.fire == [] and early.next_due_at == at(12, 0, 30)
    late = plan("0 * * * *", NOON, now=at(12, 0, 30), jitter=lambda _slot: 30.0)
    assert late.fire == [NOON] and late.next_due_at == at(13, 0, 30)


def test_next_slot_is_strictly_after() -> None:
    assert next_slot("0 * * * *", NOON) == at(13, 0)
    assert next_slot("0 * * * *", at(12, 30)) == at(13, 0)


def test_a_zone_reads_the_expression_on_its_wall_clock() -> None:
    # 09:00 in Paris in January is 08:00 UTC.
    assert next_slot("0 9 * * *", NOON, "Europe/Paris") == datetime(2026, 1, 6, 8, 0, tzinfo=UTC)


def _local(slots: list[datetime]) -> list[str]:
    return [s.astimezone(PARIS).strftime("%H:%M%z") for s in slots]


def test_spring_forward_a_skipped_local_time_fires_once_at_the_change() -> None:
    # 2026-03-29 in Paris: 02:00 local jumps to 03:00. The 02:30 slot does not exist; it fires at the change.
    start = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    slots = []
    slot = start
    for _ in range(4):
        slot = next_slot("30 * * * *", slot, "Europe/Paris")
        slots.append(slot)
    assert _local(slots) == ["01:30+0100", "03:00+0200", "03:30+0200", "04:30+0200"]
    daily = next_slot("30 2 * * *", start, "Europe/Paris")
    assert daily == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the change


def test_fall_back_a_repeated_local_time_fires_once() -> None:
    # 2026-10-25 in Paris: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice and fires the first time.
    slot = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    slots = []
    for _ in range(3):
        slot = next_slot("30 * * * *", slot, "Europe/Paris")
        slots.append(slot)
    assert _local(slots) == ["01:30+0200", "02:30+0200", "03:30+0100"]


@pytest.mark.parametrize("expression", ["@hourly", "*/15 * * * *"])
def test_slots_advance_monotonically_across_both_changes(expression: str) -> None:
    slot = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
    end = datetime(2026, 10, 26, 0, 0, tzinfo=UTC)
    seen = set()
    while slot < end:
        following = next_slot(expression, slot, "Europe/Paris")
        assert following > slot
        assert following not in seen
        seen.add(following)
        slot = following
