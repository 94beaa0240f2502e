"""Run ids are UUIDv7 (RFC 9562): valid UUIDs, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from ame.domain import new_run_id


def _ms_of(run_id: str) -> int:
    return uuid.UUID(run_id).int >> 80


def test_version_and_variant_bits() -> None:
    for _ in range(200):
        value = uuid.UUID(new_run_id())
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10


def test_canonical_lowercase_string_form() -> None:
    run_id = new_run_id()
    assert run_id == str(uuid.UUID(run_id))
    assert len(run_id) == 36 and run_id == run_id.lower()


def test_embeds_the_unix_millisecond_timestamp() -> None:
    assert _ms_of(new_run_id(now_ms=1_700_000_000_123)) == 1_700_000_000_123
    before = time.time_ns() // 1_000_000
    run_id = new_run_id()
    after = time.time_ns() // 1_000_000
    assert before <= _ms_of(run_id) <= after


def test_ids_from_later_milliseconds_sort_later_as_strings_and_uuids() -> None:
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    ids = [new_run_id(now_ms=base + offset) for offset in (0, 1, 2, 1000, 86_400_000)]
    assert sorted(ids) == ids
    assert sorted(ids, key=uuid.UUID) == ids
    # Randomness never outweighs a millisecond: many draws at t and t+1 keep the order.
    earlier = [new_run_id(now_ms=base) for _ in range(500)]
    later = [new_run_id(now_ms=base + 1) for _ in range(500)]
    assert max(earlier) < min(later)


def test_unique_over_ten_thousand_ids_in_the_same_millisecond() -> None:
    ids = {new_run_id(now_ms=1_767_225_600_000) for _ in range(10_000)}
    assert len(ids) == 10_000


def test_unique_over_ten_thousand_ids_from_the_clock() -> None:
    ids = [new_run_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    # Generated one after another, the millisecond part never goes backwards.
    stamps = [_ms_of(i) for i in ids]
    assert stamps == sorted(stamps)
