"""Orchestrations, their versions and tasks (seed 004); runs and schedules stay in their own tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.bus_messages import ScheduleDef
from ame.domain import RunState
from ame_platform.db import Connection


@dataclass(frozen=True)
class OrchestrationRow:
    id: str
    organisation: str
    name: str
    project: str
    created_at: datetime
    updated_at: datetime
    version_id: str
    project_version_id: str
    filename: str
    sha: str
    entry_dir: str
    packaging_run_id: str
    error: str
    packaging_state: RunState | None
    packaging_reason: str


@dataclass(frozen=True)
class TaskRow:
    id: str
    organisation: str
    orchestration_id: str
    orchestration: str
    version_id: str
    name: str
    kind: str
    schedule: str
    project: str
    run_task: str
    killed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_state: RunState | None
    any_active: bool


@dataclass(frozen=True)
class TaskRunRow:
    run_id: str
    state: RunState
    created_at: datetime
    updated_at: datetime


def project_for(orchestration_id: str) -> str:
    """The AME project of an orchestration: seed names may hold spaces, project names may not."""
    return f"orch-{uuid.UUID(orchestration_id).hex}"


async def ensure(conn: Connection, *, organisation: str, name: str) -> tuple[str, str]:
    """(id, project) of the organisation's orchestration `name`, created if new; touches `updated_at`."""
    new_id = str(uuid.uuid4())
    row = await conn.fetchrow(
        """INSERT INTO orchestrations (id, organisation_id, name, project) VALUES ($1, $2, $3, $4)
           ON CONFLICT (organisation_id, name) DO UPDATE SET updated_at = now()
           RETURNING id, project""",
        new_id,
        organisation,
        name,
        project_for(new_id),
    )
    assert row is not None
    return str(row["id"]), row["project"]


async def add_version(
    conn: Connection,
    *,
    orchestration_id: str,
    project_version_id: str,
    filename: str,
    sha: str,
    entry_dir: str,
) -> str:
    version_id = str(uuid.uuid4())
    await conn.execute(
        """INSERT INTO orchestration_versions (id, orchestration_id, project_version_id, filename, sha, entry_dir)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        version_id,
        orchestration_id,
        project_version_id,
        filename,
        sha,
        entry_dir,
    )
    return version_id


async def set_packaging_run(conn: Connection, *, version_id: str, run_id: str) -> None:
    await conn.execute("UPDATE orchestration_versions SET packaging_run_id = $2 WHERE id = $1", version_id, run_id)


async def set_error(conn: Connection, *, version_id: str, error: str) -> None:
    await conn.execute("UPDATE orchestration_versions SET error = $2 WHERE id = $1 AND error = ''", version_id, error)


_ORCHESTRATIONS = """
SELECT o.id, o.organisation_id, o.name, o.project, o.created_at, o.updated_at,
       v.id AS version_id, v.project_version_id, v.filename, v.sha, v.entry_dir, v.packaging_run_id, v.error,
       r.state AS packaging_state, r.reason AS packaging_reason
FROM orchestrations o
JOIN LATERAL (SELECT * FROM orchestration_versions v WHERE v.orchestration_id = o.id
              ORDER BY v.created_at DESC, v.id LIMIT 1) v ON true
LEFT JOIN runs r ON r.id = v.packaging_run_id AND r.organisation_id = o.organisation_id
WHERE o.organisation_id = $1
"""


def _orchestration(r: asyncpg.Record) -> OrchestrationRow:
    state = r["packaging_state"]
    return OrchestrationRow(
        id=str(r["id"]),
        organisation=r["organisation_id"],
        name=r["name"],
        project=r["project"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        version_id=str(r["version_id"]),
        project_version_id=r["project_version_id"],
        filename=r["filename"],
        sha=r["sha"],
        entry_dir=r["entry_dir"],
        packaging_run_id=str(r["packaging_run_id"] or ""),
        error=r["error"],
        packaging_state=RunState(state) if state else None,
        packaging_reason=r["packaging_reason"] or "",
    )


async def list_orchestrations(conn: Connection, *, organisation: str) -> list[OrchestrationRow]:
    rows = await conn.fetch(_ORCHESTRATIONS + " ORDER BY o.updated_at DESC, o.name", organisation)
    return [_orchestration(r) for r in rows]


async def find_orchestration(conn: Connection, *, organisation: str, name_or_id: str) -> OrchestrationRow | None:
    """By name, else by id (an id is also a name nobody is likely to choose, so the name wins)."""
    row = await conn.fetchrow(_ORCHESTRATIONS + " AND o.name = $2", organisation, name_or_id)
    if row is None and _is_uuid(name_or_id):
        row = await conn.fetchrow(_ORCHESTRATIONS + " AND o.id = $2::uuid", organisation, name_or_id)
    return _orchestration(row) if row is not None else None


async def delete_orchestration(conn: Connection, *, organisation: str, orchestration_id: str) -> None:
    await conn.execute(
        "DELETE FROM orchestrations WHERE organisation_id = $1 AND id = $2::uuid", organisation, orchestration_id
    )


async def add_task(
    conn: Connection,
    *,
    organisation: str,
    orchestration_id: str,
    version_id: str,
    name: str,
    kind: str,
    schedule: str,
    project: str,
    task_id: str,
    run_task: str,
) -> None:
    await conn.execute(
        """INSERT INTO orchestration_tasks
               (id, organisation_id, orchestration_id, version_id, name, kind, schedule, project, run_task)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        task_id,
        organisation,
        orchestration_id,
        version_id,
        name,
        kind,
        schedule,
        project,
        run_task,
    )


_TASKS = """
SELECT t.id, t.organisation_id, t.orchestration_id, o.name AS orchestration, t.version_id, t.name, t.kind,
       t.schedule, t.project, t.run_task, t.killed_at, t.created_at,
       GREATEST(t.updated_at, last.updated_at) AS updated_at, last.state AS last_state,
       EXISTS (SELECT 1 FROM runs a WHERE a.organisation_id = t.organisation_id AND a.project = t.project
               AND a.task = t.run_task AND a.state IN ('queued', 'launching', 'running')) AS any_active
FROM orchestration_tasks t
JOIN orchestrations o ON o.id = t.orchestration_id
LEFT JOIN LATERAL (SELECT r.state, r.updated_at FROM runs r
                   WHERE r.organisation_id = t.organisation_id AND r.project = t.project AND r.task = t.run_task
                   ORDER BY r.id DESC LIMIT 1) last ON true
WHERE t.organisation_id = $1
"""


def _task(r: asyncpg.Record) -> TaskRow:
    state = r["last_state"]
    return TaskRow(
        id=str(r["id"]),
        organisation=r["organisation_id"],
        orchestration_id=str(r["orchestration_id"]),
        orchestration=r["orchestration"],
        version_id=str(r["version_id"]),
        name=r["name"],
        kind=r["kind"],
        schedule=r["schedule"],
        project=r["project"],
        run_task=r["run_task"],
        killed_at=r["killed_at"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        last_state=RunState(state) if state else None,
        any_active=bool(r["any_active"]),
    )


async def list_tasks(conn: Connection, *, organisation: str, killed_only: bool) -> list[TaskRow]:
    where = " AND t.killed_at IS NOT NULL" if killed_only else ""
    rows = await conn.fetch(_TASKS + where + " ORDER BY 13 DESC, t.id DESC", organisation)
    return [_task(r) for r in rows]


async def get_task(conn: Connection, *, organisation: str, task_id: str) -> TaskRow | None:
    if not _is_uuid(task_id):
        return None
    row = await conn.fetchrow(_TASKS + " AND t.id = $2::uuid", organisation, task_id)
    return _task(row) if row is not None else None


async def delete_task_without_runs(conn: Connection, *, organisation: str, task_id: str) -> None:
    """Remove a task none of whose runs was made (its one run's submit failed)."""
    await conn.execute(
        """DELETE FROM orchestration_tasks t WHERE t.organisation_id = $1 AND t.id = $2::uuid
           AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.organisation_id = t.organisation_id
                           AND r.project = t.project AND r.task = t.run_task)""",
        organisation,
        task_id,
    )


async def kill_task(conn: Connection, *, organisation: str, task_id: str) -> bool:
    """Mark the task killed (once); False when it was killed already."""
    status = await conn.execute(
        """UPDATE orchestration_tasks SET killed_at = now(), updated_at = now()
           WHERE organisation_id = $1 AND id = $2::uuid AND killed_at IS NULL""",
        organisation,
        task_id,
    )
    return status.endswith(" 1")


async def is_killed(conn: Connection, *, organisation: str, project: str, run_task: str) -> bool:
    """Whether no further run of the task may start: it was killed, or it is gone (its orchestration was deleted).

    The row is held `FOR SHARE` until the caller's transaction ends: a run recorded in that transaction is then
    either before a kill or delete (which waits for it) or never made (a kill committed first is seen here)."""
    value = await conn.fetchval(
        """SELECT killed_at IS NOT NULL FROM orchestration_tasks
           WHERE organisation_id = $1 AND project = $2 AND run_task = $3 FOR SHARE""",
        organisation,
        project,
        run_task,
    )
    return value is None or bool(value)


async def task_runs(
    conn: Connection, *, organisation: str, project: str, run_task: str, states: list[str] | None, limit: int
) -> list[TaskRunRow]:
    rows = await conn.fetch(
        """SELECT id, state, created_at, updated_at FROM runs
           WHERE organisation_id = $1 AND project = $2 AND task = $3 AND ($4::text[] IS NULL OR state = ANY($4))
           ORDER BY updated_at DESC, id DESC LIMIT $5""",
        organisation,
        project,
        run_task,
        states,
        limit,
    )
    return [TaskRunRow(str(r["id"]), RunState(r["state"]), r["created_at"], r["updated_at"]) for r in rows]


async def active_runs(conn: Connection, *, organisation: str, project: str, run_task: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT id FROM runs WHERE organisation_id = $1 AND project = $2 AND task = $3
           AND state IN ('queued', 'launching', 'running')""",
        organisation,
        project,
        run_task,
    )
    return [str(r["id"]) for r in rows]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def add_schedule(
    conn: Connection, *, organisation: str, project: str, version_id: str, schedule: ScheduleDef
) -> None:
    """A task's schedule joins the orchestration project's set (the api's copy the scheduler is sent)."""
    await conn.execute(
        """INSERT INTO project_schedules (organisation_id, project, task, cron, timezone, catch_up, overlap,
               jitter_seconds, spec, project_version_id, paused)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)""",
        organisation,
        project,
        schedule.task,
        schedule.cron,
        schedule.timezone,
        schedule.catch_up,
        schedule.overlap,
        schedule.jitter_seconds,
        schedule.spec.model_dump_json(),
        version_id,
    )


async def remove_schedule(conn: Connection, *, organisation: str, project: str, run_task: str) -> None:
    await conn.execute(
        "DELETE FROM project_schedules WHERE organisation_id = $1 AND project = $2 AND task = $3",
        organisation,
        project,
        run_task,
    )
