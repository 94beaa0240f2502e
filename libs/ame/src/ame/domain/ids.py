"""Identifiers.

Run ids are UUIDv7 (RFC 9562): time-ordered, so the newest runs sort last in the database index and in
listings, while staying plain UUIDs for clients that expect one.
"""

from __future__ import annotations

import os
import re
import time
import uuid

from ame.domain.limits import MIN_RUN_ID_PREFIX_DIGITS

_HEX = re.compile(r"^[0-9a-f]*$")


def new_run_id(now_ms: int | None = None) -> str:
    """A new UUIDv7 string; `now_ms` (Unix milliseconds) is injectable for tests."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # 12 random bits (rand_a)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # 62 random bits (rand_b)
    return str(uuid.UUID(int=value))


def prefix_digits(prefix: str) -> str:
    """The hex digits a run id prefix stands for (lowercase, hyphens dropped).

    Raises:
        ValueError: it holds something other than hex digits and hyphens, has fewer than
            MIN_RUN_ID_PREFIX_DIGITS digits, or more than a run id has.
    """
    digits = prefix.replace("-", "").lower()
    if not _HEX.match(digits):
        raise ValueError(f"run id prefix {prefix[:80]!r} may hold only hex digits and hyphens")
    if len(digits) < MIN_RUN_ID_PREFIX_DIGITS:
        raise ValueError(f"a run id prefix needs at least {MIN_RUN_ID_PREFIX_DIGITS} hex digits, not {len(digits)}")
    if len(digits) > 32:
        raise ValueError("a run id prefix cannot be longer than a run id (32 hex digits)")
    return digits
