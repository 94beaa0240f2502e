"""Identifiers.

Run ids are UUIDv7 (RFC 9562): time-ordered, so the newest runs sort last in the database index and in
listings, while staying plain UUIDs for clients that expect one.
"""

from __future__ import annotations

import os
import time
import uuid


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
