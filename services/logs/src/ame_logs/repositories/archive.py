"""The log archive: chunks of lines and the end of each run attempt's output. Writes are idempotent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ame_platform.db import Connection

# Rows per round trip of a cursor: a chunk holds up to a few hundred lines.
_CURSOR_PREFETCH = 64


@dataclass(frozen=True)
class ArchivedEnd:
    state: str
    exit_code: int | None
    reason: str
    total_lines: int


async def create_chunk(
    conn: Connection, *, run_id: str, attempt: int, first_seq: int, last_seq: int, payload: bytes
) -> None:
    await conn.execute(
        """INSERT INTO log_chunks (run_id, attempt, first_seq, last_seq, payload) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING""",
        uuid.UUID(run_id),
        attempt,
        first_seq,
        last_seq,
        payload,
    )


async def create_end(
    conn: Connection,
    *,
    run_id: str,
    attempt: int,
    state: str,
    exit_code: int | None,
    reason: str,
    total_lines: int,
) -> None:
    await conn.execute(
        """INSERT INTO log_ends (run_id, attempt, state, exit_code, reason, total_lines)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        uuid.UUID(run_id),
        attempt,
        state,
        exit_code,
        reason,
        total_lines,
    )


async def find_latest_attempt(conn: Connection, run_id: str) -> int | None:
    value = await conn.fetchval(
        """SELECT max(attempt) FROM (
               SELECT attempt FROM log_chunks WHERE run_id = $1
               UNION ALL SELECT attempt FROM log_ends WHERE run_id = $1) AS attempts""",
        uuid.UUID(run_id),
    )
    return int(value) if value is not None else None


async def iter_chunks(conn: Connection, *, run_id: str, attempt: int, from_seq: int) -> AsyncGenerator[bytes, None]:
    """Payloads of the chunks holding lines >= from_seq, in order, read through a server-side cursor (in a
    transaction) so that a reader that stops after a page has not fetched the rest of a long output."""
    cursor = conn.cursor(
        """SELECT payload FROM log_chunks WHERE run_id = $1 AND attempt = $2 AND last_seq >= $3
           ORDER BY first_seq""",
        uuid.UUID(run_id),
        attempt,
        from_seq,
        prefetch=_CURSOR_PREFETCH,
    )
    async for row in cursor:
        yield bytes(row["payload"])


async def find_end(conn: Connection, *, run_id: str, attempt: int) -> ArchivedEnd | None:
    row = await conn.fetchrow(
        "SELECT state, exit_code, reason, total_lines FROM log_ends WHERE run_id = $1 AND attempt = $2",
        uuid.UUID(run_id),
        attempt,
    )
    if row is None:
        return None
    return ArchivedEnd(row["state"], row["exit_code"], row["reason"], row["total_lines"])
