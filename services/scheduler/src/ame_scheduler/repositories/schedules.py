"""Schedules and their fires."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ame.domain import RunSpec
from ame_platform.db import Connection


@dataclass(frozen=True)
class DueSchedule:
    id: str
    organisation: str
    cron: str
    spec: RunSpec
    next_fire_at: datetime


async def create_schedule(
    conn: Connection, *, organisation: str, spec: RunSpec, cron: str, next_fire_at: datetime
) -> str:
    schedule_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO schedules (id, organisation_id, project, task, cron, spec, next_fire_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        schedule_id,
        organisation,
        spec.project,
        spec.task,
        cron,
        spec.model_dump_json(),
        next_fire_at,
    )
    return str(schedule_id)


async def claim_due_schedules(conn: Connection, *, now: datetime, limit: int) -> list[DueSchedule]:
    """Enabled schedules with a slot due; locked so each is handled by one replica at a time."""
    rows = await conn.fetch(
        """SELECT id, organisation_id, cron, spec, next_fire_at FROM schedules
           WHERE enabled AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [
        DueSchedule(
            str(r["id"]),
            r["organisation_id"],
            r["cron"],
            RunSpec.model_validate_json(r["spec"]),
            r["next_fire_at"],
        )
        for r in rows
    ]


async def create_fire(conn: Connection, *, schedule_id: str, slot: datetime, missed: bool) -> bool:
    """True if this slot was not recorded before (the unique key is the guard against double fires)."""
    value = await conn.fetchval(
        """INSERT INTO schedule_fires (schedule_id, slot, missed) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING 1""",
        uuid.UUID(schedule_id),
        slot,
        missed,
    )
    return value is not None


async def update_next_fire(conn: Connection, *, schedule_id: str, next_fire_at: datetime) -> None:
    await conn.execute(
        "UPDATE schedules SET next_fire_at = $2, updated_at = now() WHERE id = $1",
        uuid.UUID(schedule_id),
        next_fire_at,
    )
