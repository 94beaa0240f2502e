"""The coordinator's tables: pipelines, their steps, and the outbox of what it decided to send."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.domain import new_run_id
from ame_platform.bus.publisher import headers_for
from ame_platform.db import Connection

ACTIVE_STEP_STATES = frozenset({"submitted", "running"})
ENDED_BADLY = frozenset({"failed", "cancelled", "timed_out", "lost"})
STEP_DONE = frozenset({"succeeded", "skipped"}) | ENDED_BADLY


@dataclass(frozen=True)
class Pipeline:
    run_id: str
    organisation: str
    started_by: str
    spec: bytes
    state: str
    cancel_requested: bool
    reason: str
    timed_out: bool = False


@dataclass(frozen=True)
class Step:
    name: str
    stage: int
    position: int
    child_run_id: str
    state: str
    attempt: int
    exit_code: int | None
    reason: str
    layer_run_id: str

    @property
    def files_of(self) -> str:
        """The run whose saved files are this step's layer."""
        return self.layer_run_id or self.child_run_id


@dataclass(frozen=True)
class Outgoing:
    msg_id: str
    subject: str
    payload: bytes


@dataclass(frozen=True)
class OutboxRow:
    id: int
    subject: str
    payload: bytes
    headers: dict[str, str]


async def add_pipeline(
    conn: Connection,
    *,
    run_id: str,
    organisation: str,
    started_by: str,
    spec: bytes,
    steps: list[tuple[str, int, int]],
    timeout_seconds: float | None = None,
) -> bool:
    """Record a pipeline and its steps (name, stage, position), each with a fresh child run id; False when it
    was recorded before (a redelivered start)."""
    added = await conn.fetchval(
        """INSERT INTO pipeline_runs (run_id, organisation, started_by, spec, deadline)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
           ON CONFLICT DO NOTHING RETURNING 1""",
        uuid.UUID(run_id),
        organisation,
        started_by,
        spec,
        timeout_seconds,
    )
    if added is None:
        return False
    await conn.executemany(
        """INSERT INTO pipeline_steps (parent_run_id, name, stage, position, child_run_id)
           VALUES ($1, $2, $3, $4, $5)""",
        # Time-ordered ids (UUIDv7) like every other run, so a pipeline's steps list beside it.
        [(uuid.UUID(run_id), name, stage, position, uuid.UUID(new_run_id())) for name, stage, position in steps],
    )
    return True


async def lock_pipeline(conn: Connection, run_id: str) -> Pipeline | None:
    """The pipeline, its row locked until the transaction ends: one decision at a time per pipeline."""
    row = await conn.fetchrow(
        """SELECT run_id, organisation, started_by, spec, state, cancel_requested, reason, timed_out FROM pipeline_runs
           WHERE run_id = $1 FOR UPDATE""",
        uuid.UUID(run_id),
    )
    if row is None:
        return None
    return Pipeline(
        str(row["run_id"]),
        row["organisation"],
        row["started_by"],
        bytes(row["spec"]),
        row["state"],
        row["cancel_requested"],
        row["reason"],
        row["timed_out"],
    )


async def parent_of(conn: Connection, child_run_id: str) -> str | None:
    value = await conn.fetchval(
        "SELECT parent_run_id FROM pipeline_steps WHERE child_run_id = $1", uuid.UUID(child_run_id)
    )
    return str(value) if value is not None else None


async def is_pipeline(conn: Connection, run_id: str) -> bool:
    value = await conn.fetchval("SELECT 1 FROM pipeline_runs WHERE run_id = $1", uuid.UUID(run_id))
    return value is not None


async def steps(conn: Connection, run_id: str) -> list[Step]:
    rows = await conn.fetch(
        """SELECT name, stage, position, child_run_id, state, attempt, exit_code, reason, layer_run_id
           FROM pipeline_steps WHERE parent_run_id = $1 ORDER BY stage, position""",
        uuid.UUID(run_id),
    )
    return [
        Step(
            r["name"],
            r["stage"],
            r["position"],
            str(r["child_run_id"]),
            r["state"],
            r["attempt"],
            r["exit_code"],
            r["reason"],
            str(r["layer_run_id"]) if r["layer_run_id"] is not None else "",
        )
        for r in rows
    ]


async def reuse_succeeded(conn: Connection, *, run_id: str, resumed: str, organisation: str) -> int:
    """Mark the steps that succeeded in pipeline `resumed` (same organisation, same step name) succeeded here too,
    their files being that run's; returns how many."""
    status = await conn.execute(
        """UPDATE pipeline_steps AS s SET
               state = 'succeeded', attempt = o.attempt, exit_code = o.exit_code,
               layer_run_id = COALESCE(o.layer_run_id, o.child_run_id),
               reason = 'reused from run ' || $2::text, finished_at = o.finished_at, started_at = o.started_at
           FROM pipeline_steps AS o JOIN pipeline_runs AS r ON r.run_id = o.parent_run_id
           WHERE s.parent_run_id = $1 AND o.parent_run_id = $2::uuid AND r.organisation = $3
             AND o.name = s.name AND o.state = 'succeeded'""",
        uuid.UUID(run_id),
        resumed,
        organisation,
    )
    return int(status.split()[-1])


async def set_step(
    conn: Connection,
    run_id: str,
    name: str,
    *,
    state: str,
    attempt: int | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> None:
    await conn.execute(
        """UPDATE pipeline_steps SET
               state = $3,
               attempt = COALESCE($4, attempt),
               exit_code = COALESCE($5, exit_code),
               reason = COALESCE($6, reason),
               submitted_at = CASE WHEN $3 = 'submitted' THEN now() ELSE submitted_at END,
               started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $7, now()) ELSE started_at END,
               finished_at = CASE WHEN $3 = ANY($8::text[]) THEN COALESCE($7, now()) ELSE finished_at END
           WHERE parent_run_id = $1 AND name = $2""",
        uuid.UUID(run_id),
        name,
        state,
        attempt,
        exit_code,
        reason,
        at,
        sorted(STEP_DONE),
    )


async def mark_submitted(conn: Connection, run_id: str, names: list[str]) -> None:
    """The steps `names` were submitted (one statement for a whole parallel group)."""
    await conn.execute(
        """UPDATE pipeline_steps SET state = 'submitted', submitted_at = now()
           WHERE parent_run_id = $1 AND name = ANY($2::text[])""",
        uuid.UUID(run_id),
        names,
    )


async def set_pipeline(
    conn: Connection, run_id: str, *, state: str, reason: str = "", cancel_requested: bool | None = None
) -> None:
    await conn.execute(
        """UPDATE pipeline_runs SET state = $2, reason = $3,
               cancel_requested = COALESCE($4, cancel_requested),
               finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled', 'timed_out') THEN now() ELSE NULL END
           WHERE run_id = $1""",
        uuid.UUID(run_id),
        state,
        reason,
        cancel_requested,
    )


async def add_outgoing(conn: Connection, messages: list[Outgoing]) -> list[OutboxRow]:
    """Write `messages` to the outbox; returns them as its rows, in order."""
    if not messages:
        return []
    headers = [headers_for(m.msg_id) for m in messages]
    rows = await conn.fetch(
        """INSERT INTO pipeline_outbox (msg_id, subject, payload, headers)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[])
           RETURNING id, msg_id""",
        [m.msg_id for m in messages],
        [m.subject for m in messages],
        [m.payload for m in messages],
        [json.dumps(h) for h in headers],
    )
    # RETURNING promises no order: each row is matched to its message by msg_id (one decision's are distinct).
    ids = {row["msg_id"]: int(row["id"]) for row in rows}
    if len(ids) != len(messages):
        raise RuntimeError(f"the outbox took {len(rows)} rows for {len(messages)} messages of distinct ids")
    return [OutboxRow(ids[m.msg_id], m.subject, m.payload, h) for m, h in zip(messages, headers, strict=True)]


async def claim_outbox(
    conn: Connection, *, older_than_seconds: float, hold_seconds: float, limit: int
) -> list[OutboxRow]:
    """Rows nobody published (a replica died between commit and publish): claimed for `hold_seconds`, in a
    statement of their own, so the claimer publishes outside any transaction and others leave them alone."""
    rows = await conn.fetch(
        """UPDATE pipeline_outbox SET claimed_until = now() + make_interval(secs => $2)
           WHERE id IN (
               SELECT id FROM pipeline_outbox
               WHERE created_at < now() - make_interval(secs => $1)
                 AND (claimed_until IS NULL OR claimed_until < now())
               ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING id, subject, payload, headers""",
        older_than_seconds,
        hold_seconds,
        limit,
    )
    return sorted((_outbox_row(r) for r in rows), key=lambda row: row.id)


async def delete_outbox(conn: Connection, ids: list[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM pipeline_outbox WHERE id = ANY($1::bigint[])", ids)


def _outbox_row(row: asyncpg.Record) -> OutboxRow:
    headers = row["headers"]
    return OutboxRow(
        int(row["id"]),
        row["subject"],
        bytes(row["payload"]),
        json.loads(headers) if isinstance(headers, str) else dict(headers),
    )


async def overdue(conn: Connection, *, limit: int) -> list[str]:
    """Running pipelines past their deadline (not locked: each is then decided under its own row lock)."""
    rows = await conn.fetch(
        """SELECT run_id FROM pipeline_runs WHERE state = 'running' AND deadline IS NOT NULL AND deadline <= now()
           ORDER BY deadline LIMIT $1""",
        limit,
    )
    return [str(r["run_id"]) for r in rows]


async def mark_timed_out(conn: Connection, run_id: str, reason: str) -> None:
    await conn.execute(
        """UPDATE pipeline_runs SET timed_out = true, cancel_requested = true, reason = $2
           WHERE run_id = $1 AND state = 'running'""",
        uuid.UUID(run_id),
        reason,
    )
