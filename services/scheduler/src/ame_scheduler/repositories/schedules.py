"""Schedules, their fires, and the schedule set each project declared last."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ame.bus_messages import ScheduleDef
from ame.domain import RunSpec
from ame_platform.db import Connection


@dataclass(frozen=True)
class DueSchedule:
    id: str
    organisation: str
    cron: str
    spec: RunSpec
    next_fire_at: datetime
    timezone: str = "UTC"
    catch_up: str = "none"
    overlap: str = "allow"
    jitter_seconds: float = 0.0


@dataclass(frozen=True)
class Existing:
    id: str
    task: str
    cron: str
    timezone: str
    active: bool
    enabled: bool
    next_fire_at: datetime
    last_slot: datetime | None


@dataclass(frozen=True)
class NewFire:
    schedule_id: str
    slot: datetime
    missed: bool
    payload: bytes | None


@dataclass(frozen=True)
class Advance:
    schedule_id: str
    next_fire_at: datetime
    due_at: datetime
    last_slot: datetime | None


async def create_schedule(
    conn: Connection,
    *,
    organisation: str,
    spec: RunSpec,
    cron: str,
    next_fire_at: datetime,
    timezone: str = "UTC",
    catch_up: str = "none",
    overlap: str = "allow",
    jitter_seconds: float = 0.0,
    due_at: datetime | None = None,
    project_version_id: str = "",
    enabled: bool = True,
) -> str:
    schedule_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO schedules (id, organisation_id, project, task, cron, spec, next_fire_at, due_at, timezone,
                                  catch_up, overlap, jitter_seconds, project_version_id, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        schedule_id,
        organisation,
        spec.project,
        spec.task,
        cron,
        spec.model_dump_json(),
        next_fire_at,
        due_at or next_fire_at,
        timezone,
        catch_up,
        overlap,
        jitter_seconds,
        project_version_id,
        enabled,
    )
    return str(schedule_id)


async def lock_project(conn: Connection, *, organisation: str, project: str, generation: int, version_id: str) -> bool:
    """Take the project's schedule set for this generation; False when a generation as new was applied already
    (a redelivered or late message). Holds the project's row lock until the transaction ends."""
    value = await conn.fetchval(
        """INSERT INTO schedule_projects (organisation_id, project, generation, project_version_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (organisation_id, project) DO UPDATE
              SET generation = EXCLUDED.generation, project_version_id = EXCLUDED.project_version_id,
                  updated_at = now()
              WHERE schedule_projects.generation < EXCLUDED.generation
           RETURNING 1""",
        organisation,
        project,
        generation,
        version_id,
    )
    return value is not None


async def project_schedules(conn: Connection, *, organisation: str, project: str) -> list[Existing]:
    rows = await conn.fetch(
        """SELECT id, task, cron, timezone, active, enabled, next_fire_at, last_slot FROM schedules
           WHERE organisation_id = $1 AND project = $2 FOR UPDATE""",
        organisation,
        project,
    )
    return [
        Existing(
            str(r["id"]),
            r["task"],
            r["cron"],
            r["timezone"],
            r["active"],
            r["enabled"],
            r["next_fire_at"],
            r["last_slot"],
        )
        for r in rows
    ]


async def update_definition(
    conn: Connection,
    *,
    schedule_id: str,
    definition: ScheduleDef,
    version_id: str,
    next_fire_at: datetime,
    due_at: datetime,
) -> None:
    await conn.execute(
        """UPDATE schedules SET cron = $2, spec = $3, timezone = $4, catch_up = $5, overlap = $6,
                  jitter_seconds = $7, enabled = $8, project_version_id = $9, active = true,
                  next_fire_at = $10, due_at = $11, updated_at = now()
           WHERE id = $1""",
        uuid.UUID(schedule_id),
        definition.cron,
        definition.spec.model_dump_json(),
        definition.timezone,
        definition.catch_up,
        definition.overlap,
        definition.jitter_seconds,
        definition.enabled,
        version_id,
        next_fire_at,
        due_at,
    )


async def deactivate(conn: Connection, schedule_ids: Sequence[str]) -> None:
    if schedule_ids:
        await conn.execute(
            "UPDATE schedules SET active = false, updated_at = now() WHERE id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in schedule_ids],
        )


async def claim_due_schedules(conn: Connection, *, now: datetime, limit: int) -> list[DueSchedule]:
    """Active, enabled schedules with a slot due; locked so each is handled by one replica at a time."""
    rows = await conn.fetch(
        """SELECT id, organisation_id, cron, spec, next_fire_at, timezone, catch_up, overlap, jitter_seconds
           FROM schedules
           WHERE enabled AND active AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
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
            r["timezone"],
            r["catch_up"],
            r["overlap"],
            r["jitter_seconds"],
        )
        for r in rows
    ]


async def record_fires(conn: Connection, fires: Sequence[NewFire], *, fired_at: datetime) -> set[tuple[str, datetime]]:
    """Record the fires in one statement; returns the (schedule, slot) pairs not recorded before (the unique key
    is the guard against double fires)."""
    if not fires:
        return set()
    rows = await conn.fetch(
        """INSERT INTO schedule_fires (schedule_id, slot, missed, payload, fired_at)
           SELECT s, t, m, p, $5 FROM unnest($1::uuid[], $2::timestamptz[], $3::boolean[], $4::bytea[]) AS u(s, t, m, p)
           ON CONFLICT DO NOTHING RETURNING schedule_id, slot""",
        [uuid.UUID(f.schedule_id) for f in fires],
        [f.slot for f in fires],
        [f.missed for f in fires],
        [f.payload for f in fires],
        fired_at,
    )
    return {(str(r["schedule_id"]), r["slot"]) for r in rows}


async def advance(conn: Connection, advances: Sequence[Advance]) -> None:
    if not advances:
        return
    await conn.execute(
        """UPDATE schedules AS s SET next_fire_at = u.n, due_at = u.d, last_slot = COALESCE(u.l, s.last_slot),
                  updated_at = now()
           FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[]) AS u(i, n, d, l)
           WHERE s.id = u.i""",
        [uuid.UUID(a.schedule_id) for a in advances],
        [a.next_fire_at for a in advances],
        [a.due_at for a in advances],
        [a.last_slot for a in advances],
    )


async def mark_published(conn: Connection, fired: Sequence[tuple[str, datetime]]) -> None:
    if fired:
        await conn.execute(
            """UPDATE schedule_fires AS f SET published_at = now()
               FROM unnest($1::uuid[], $2::timestamptz[]) AS u(s, t) WHERE f.schedule_id = u.s AND f.slot = u.t""",
            [uuid.UUID(s) for s, _ in fired],
            [t for _, t in fired],
        )


async def claim_unpublished(conn: Connection, *, limit: int, lease_seconds: float) -> list[tuple[str, datetime, bytes]]:
    """Fires whose replica did not publish them (it died after its commit): leased to this replica for
    `lease_seconds` in a statement of their own, so they are published with no row locked."""
    rows = await conn.fetch(
        """UPDATE schedule_fires SET relay_after = now() + make_interval(secs => $2)
           WHERE (schedule_id, slot) IN (
               SELECT schedule_id, slot FROM schedule_fires
               WHERE published_at IS NULL AND NOT missed AND payload IS NOT NULL AND relay_after <= now()
               ORDER BY relay_after LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING schedule_id, slot, payload""",
        limit,
        lease_seconds,
    )
    return [(str(r["schedule_id"]), r["slot"], bytes(r["payload"])) for r in rows]


async def create_fire(conn: Connection, *, schedule_id: str, slot: datetime, missed: bool) -> bool:
    """True if this slot was not recorded before."""
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
        "UPDATE schedules SET next_fire_at = $2, due_at = $2, updated_at = now() WHERE id = $1",
        uuid.UUID(schedule_id),
        next_fire_at,
    )
