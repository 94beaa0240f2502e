"""Retries waiting for their backoff, and what became of them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ame_platform.db import Connection


@dataclass(frozen=True)
class DueRetry:
    run_id: str
    attempt: int
    launch: bytes


async def add_retry(conn: Connection, *, run_id: str, attempt: int, delay_seconds: float, launch: bytes) -> bool:
    """Record the retry, due `delay_seconds` from now (the database's clock, which every replica shares). False if
    it was recorded before (a redelivered request): its due time stays as it was."""
    value = await conn.fetchval(
        """INSERT INTO run_retries (run_id, attempt, due_at, launch)
           VALUES ($1, $2, now() + make_interval(secs => $3), $4)
           ON CONFLICT DO NOTHING RETURNING 1""",
        uuid.UUID(run_id),
        attempt,
        delay_seconds,
        launch,
    )
    return value is not None


async def claim_due(conn: Connection, *, limit: int) -> list[DueRetry]:
    """Pending retries whose backoff is over; locked so that each is handled by one replica."""
    rows = await conn.fetch(
        """SELECT run_id, attempt, launch FROM run_retries
           WHERE state = 'pending' AND due_at <= now()
           ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [DueRetry(str(r["run_id"]), r["attempt"], bytes(r["launch"])) for r in rows]


async def settle(conn: Connection, *, run_id: str, attempt: int, state: str) -> None:
    await conn.execute(
        "UPDATE run_retries SET state = $3, settled_at = now() WHERE run_id = $1 AND attempt = $2",
        uuid.UUID(run_id),
        attempt,
        state,
    )


async def find(conn: Connection, *, run_id: str, attempt: int) -> tuple[str, datetime] | None:
    """(state, due_at) of the retry, if recorded."""
    row = await conn.fetchrow(
        "SELECT state, due_at FROM run_retries WHERE run_id = $1 AND attempt = $2", uuid.UUID(run_id), attempt
    )
    return (row["state"], row["due_at"]) if row is not None else None
