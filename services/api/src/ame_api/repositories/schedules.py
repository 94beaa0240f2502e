"""The trigger version of each project and the api's copy of its schedules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.bus_messages import ScheduleDef
from ame.domain import RunSpec
from ame_platform.db import Connection


@dataclass(frozen=True)
class ScheduleRow:
    project: str
    task: str
    cron: str
    timezone: str
    catch_up: str
    overlap: str
    jitter_seconds: float
    spec: RunSpec
    project_version_id: str
    paused: bool

    def definition(self) -> ScheduleDef:
        return ScheduleDef(
            task=self.task,
            cron=self.cron,
            spec=self.spec,
            timezone=self.timezone,
            catch_up=self.catch_up,
            overlap=self.overlap,
            jitter_seconds=self.jitter_seconds,
            enabled=not self.paused,
        )


_COLUMNS = "project, task, cron, timezone, catch_up, overlap, jitter_seconds, spec, project_version_id, paused"


def _row(r: asyncpg.Record) -> ScheduleRow:
    get = r.__getitem__
    return ScheduleRow(
        get("project"),
        get("task"),
        get("cron"),
        get("timezone"),
        get("catch_up"),
        get("overlap"),
        get("jitter_seconds"),
        RunSpec.model_validate_json(get("spec")),
        get("project_version_id"),
        get("paused"),
    )


async def activate(conn: Connection, *, project_id: str, version_id: str | None) -> int:
    """Make `version_id` the project's trigger version (None: none) and return the new schedules generation;
    locks the project's row until the transaction ends, so activations of one project are serialised."""
    value = await conn.fetchval(
        """UPDATE projects SET active_version_id = COALESCE($2, active_version_id),
                  schedules_generation = schedules_generation + 1, activated_at = now()
           WHERE id = $1::uuid RETURNING schedules_generation""",
        project_id,
        version_id,
    )
    return int(value)


async def next_generation(conn: Connection, *, project_id: str) -> int:
    value = await conn.fetchval(
        "UPDATE projects SET schedules_generation = schedules_generation + 1 WHERE id = $1::uuid "
        "RETURNING schedules_generation",
        project_id,
    )
    return int(value)


async def active_version(conn: Connection, *, project_id: str) -> tuple[str | None, datetime | None]:
    row = await conn.fetchrow("SELECT active_version_id, activated_at FROM projects WHERE id = $1::uuid", project_id)
    return (row["active_version_id"], row["activated_at"]) if row is not None else (None, None)


async def replace(
    conn: Connection, *, organisation: str, project: str, version_id: str, schedules: Sequence[ScheduleDef]
) -> list[ScheduleRow]:
    """The project's schedules become `schedules` (a task keeps its pause); returns them as stored."""
    paused = {
        r["task"]
        for r in await conn.fetch(
            "SELECT task FROM project_schedules WHERE organisation_id = $1 AND project = $2 AND paused",
            organisation,
            project,
        )
    }
    await conn.execute(
        "DELETE FROM project_schedules WHERE organisation_id = $1 AND project = $2", organisation, project
    )
    if schedules:
        await conn.executemany(
            f"""INSERT INTO project_schedules (organisation_id, {_COLUMNS})
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            [
                (
                    organisation,
                    project,
                    s.task,
                    s.cron,
                    s.timezone,
                    s.catch_up,
                    s.overlap,
                    s.jitter_seconds,
                    s.spec.model_dump_json(),
                    version_id,
                    s.task in paused,
                )
                for s in schedules
            ],
        )
    return await for_project(conn, organisation=organisation, project=project)


async def for_project(conn: Connection, *, organisation: str, project: str) -> list[ScheduleRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM project_schedules WHERE organisation_id = $1 AND project = $2 ORDER BY task",
        organisation,
        project,
    )
    return [_row(r) for r in rows]


async def list_all(conn: Connection, *, organisation: str, project: str | None) -> list[ScheduleRow]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM project_schedules
            WHERE organisation_id = $1 AND ($2::text IS NULL OR project = $2) ORDER BY project, task""",
        organisation,
        project,
    )
    return [_row(r) for r in rows]


async def find_by_task(conn: Connection, *, organisation: str, task: str, project: str | None) -> list[ScheduleRow]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM project_schedules
            WHERE organisation_id = $1 AND task = $2 AND ($3::text IS NULL OR project = $3) ORDER BY project""",
        organisation,
        task,
        project,
    )
    return [_row(r) for r in rows]


async def set_paused(conn: Connection, *, organisation: str, project: str, task: str, paused: bool) -> None:
    await conn.execute(
        "UPDATE project_schedules SET paused = $4 WHERE organisation_id = $1 AND project = $2 AND task = $3",
        organisation,
        project,
        task,
        paused,
    )


async def last_runs(
    conn: Connection, *, organisation: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str, datetime]]:
    """(project, task) -> (run id, state, created_at) of the last run a schedule started."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT DISTINCT ON (r.project, r.task) r.project, r.task, r.id, r.state, r.created_at
           FROM runs r JOIN unnest($2::text[], $3::text[]) AS k(p, t) ON r.project = k.p AND r.task = k.t
           WHERE r.organisation_id = $1 AND r.trigger = 'schedule'
           ORDER BY r.project, r.task, r.id DESC""",
        organisation,
        [p for p, _ in keys],
        [t for _, t in keys],
    )
    return {(r["project"], r["task"]): (str(r["id"]), r["state"], r["created_at"]) for r in rows}


async def overlapping(conn: Connection, *, organisation: str, project: str, task: str, key: str) -> bool:
    """Whether a run a schedule started for the task, other than the one for `key`, has not ended."""
    value = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM runs WHERE organisation_id = $1 AND project = $2 AND task = $3
           AND trigger = 'schedule' AND state IN ('queued', 'launching', 'running')
           AND idempotency_key IS DISTINCT FROM $4)""",
        organisation,
        project,
        task,
        key,
    )
    return bool(value)


async def fired_before(conn: Connection, *, organisation: str, key: str) -> bool:
    value = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE organisation_id = $1 AND idempotency_key = $2)", organisation, key
    )
    return bool(value)


async def take_waiting(conn: Connection, *, organisation: str, project: str, task: str, key: str) -> bool:
    """Whether the fire `key` is (now, or already) the one slot of the task waiting for its previous run."""
    holder = await conn.fetchval(
        """INSERT INTO schedule_waiting (organisation_id, project, task, idempotency_key) VALUES ($1, $2, $3, $4)
           ON CONFLICT (organisation_id, project, task) DO UPDATE SET since = schedule_waiting.since
           RETURNING idempotency_key""",
        organisation,
        project,
        task,
        key,
    )
    return bool(holder == key)


async def release_waiting(conn: Connection, *, organisation: str, project: str, task: str, key: str) -> None:
    await conn.execute(
        """DELETE FROM schedule_waiting
           WHERE organisation_id = $1 AND project = $2 AND task = $3 AND idempotency_key = $4""",
        organisation,
        project,
        task,
        key,
    )
