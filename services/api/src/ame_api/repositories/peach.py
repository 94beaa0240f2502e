"""PEACH loops in PostgreSQL: each project's tasks (from its trigger version), each loop's progress, executions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ame.domain import RunSpec
from ame_platform.db import Connection


@dataclass(frozen=True)
class TaskRow:
    project: str
    task: str
    loop_owner: str
    loop_name: str
    version_id: str
    version_label: str
    spec: RunSpec | None
    unsupported: str


@dataclass(frozen=True)
class PlanItem:
    organisation: str
    project: str
    task: str
    version_id: str
    version_label: str
    spec: RunSpec | None
    unsupported: str

    def to_json(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation,
            "project": self.project,
            "task": self.task,
            "version_id": self.version_id,
            "version_label": self.version_label,
            "spec": self.spec.model_dump(mode="json") if self.spec is not None else None,
            "unsupported": self.unsupported,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PlanItem:
        spec = value.get("spec")
        return cls(
            organisation=value["organisation"],
            project=value["project"],
            task=value["task"],
            version_id=value["version_id"],
            version_label=value["version_label"],
            spec=RunSpec.model_validate(spec) if spec is not None else None,
            unsupported=value.get("unsupported", ""),
        )


@dataclass(frozen=True)
class LoopRow:
    loop_owner: str
    loop_name: str
    cycle: int
    plan: list[PlanItem]
    position: int
    current_run_id: str | None
    cycle_started_at: datetime | None
    cycle_ended_at: datetime | None


@dataclass(frozen=True)
class Execution:
    id: int
    organisation: str
    project: str
    task: str
    loop_name: str
    cycle: int
    run_id: str | None
    version_id: str
    version_label: str
    status: str
    reason: str
    started_at: datetime
    finished_at: datetime | None


# A version synced from git shows its short commit hash (`project_versions.git_commit`, set by the sync), read
# when shown: the sync tags the version after activating it, possibly after the loop already started it.
_VERSION_JOIN = (
    "LEFT JOIN projects p ON p.organisation_id = {alias}.organisation_id AND p.name = {alias}.project "
    "LEFT JOIN project_versions v ON v.project_id = p.id AND v.id = {alias}.version_id"
)
_LABEL = "COALESCE(v.git_commit, {alias}.version_label)"


async def replace_tasks(conn: Connection, *, organisation: str, project: str, tasks: Sequence[TaskRow]) -> None:
    """The project's tasks become `tasks` (inside the caller's transaction), and each of their loops exists."""
    await conn.execute("DELETE FROM peach_tasks WHERE organisation_id = $1 AND project = $2", organisation, project)
    for t in tasks:
        await conn.execute(
            "INSERT INTO peach_tasks (organisation_id, project, task, loop_owner, loop_name, version_id, "
            "version_label, spec, unsupported) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)",
            organisation,
            project,
            t.task,
            t.loop_owner,
            t.loop_name,
            t.version_id,
            t.version_label,
            json.dumps(t.spec.model_dump(mode="json")) if t.spec is not None else None,
            t.unsupported,
        )
        await conn.execute(
            "INSERT INTO peach_loops (loop_owner, loop_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            t.loop_owner,
            t.loop_name,
        )


async def loop_tasks(conn: Connection, *, loop_owner: str, loop_name: str) -> list[PlanItem]:
    """The loop's tasks as the projects' trigger versions declare them now, in a stable order."""
    rows = await conn.fetch(
        "SELECT organisation_id, project, task, version_id, version_label, spec, unsupported FROM peach_tasks "
        "WHERE loop_owner = $1 AND loop_name = $2 ORDER BY organisation_id, project, task",
        loop_owner,
        loop_name,
    )
    return [
        PlanItem(
            organisation=r["organisation_id"],
            project=r["project"],
            task=r["task"],
            version_id=r["version_id"],
            version_label=r["version_label"],
            spec=RunSpec.model_validate(json.loads(r["spec"])) if r["spec"] is not None else None,
            unsupported=r["unsupported"],
        )
        for r in rows
    ]


async def loop_keys(conn: Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT loop_owner, loop_name FROM peach_loops ORDER BY loop_owner, loop_name")
    return [(r["loop_owner"], r["loop_name"]) for r in rows]


async def lock_loop(conn: Connection, *, loop_owner: str, loop_name: str, wait: bool = False) -> LoopRow | None:
    """The loop, locked for this transaction; None when another replica drives it right now (or, with `wait`,
    after waiting for that replica's transaction: None only when the loop does not exist)."""
    row = await conn.fetchrow(
        "SELECT * FROM peach_loops WHERE loop_owner = $1 AND loop_name = $2 FOR UPDATE"
        + ("" if wait else " SKIP LOCKED"),
        loop_owner,
        loop_name,
    )
    if row is None:
        return None
    return LoopRow(
        loop_owner=row["loop_owner"],
        loop_name=row["loop_name"],
        cycle=row["cycle"],
        plan=[PlanItem.from_json(v) for v in json.loads(row["plan"])],
        position=row["position"],
        current_run_id=str(row["current_run_id"]) if row["current_run_id"] is not None else None,
        cycle_started_at=row["cycle_started_at"],
        cycle_ended_at=row["cycle_ended_at"],
    )


async def save_loop(conn: Connection, loop: LoopRow) -> None:
    await conn.execute(
        "UPDATE peach_loops SET cycle = $3, plan = $4::jsonb, position = $5, current_run_id = $6, "
        "cycle_started_at = $7, cycle_ended_at = $8 WHERE loop_owner = $1 AND loop_name = $2",
        loop.loop_owner,
        loop.loop_name,
        loop.cycle,
        json.dumps([p.to_json() for p in loop.plan]),
        loop.position,
        uuid.UUID(loop.current_run_id) if loop.current_run_id else None,
        loop.cycle_started_at,
        loop.cycle_ended_at,
    )


async def start_execution(
    conn: Connection,
    loop: LoopRow,
    item: PlanItem,
    *,
    run_id: str | None,
    status: str,
    reason: str,
    at: datetime,
    finished_at: datetime | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO peach_executions (organisation_id, project, task, loop_owner, loop_name, cycle, position, "
        "run_id, version_id, version_label, status, reason, started_at, finished_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
        "ON CONFLICT (loop_owner, loop_name, cycle, position) DO NOTHING",
        item.organisation,
        item.project,
        item.task,
        loop.loop_owner,
        loop.loop_name,
        loop.cycle,
        loop.position,
        uuid.UUID(run_id) if run_id else None,
        item.version_id,
        item.version_label,
        status,
        reason,
        at,
        finished_at,
    )


async def finish_execution(
    conn: Connection,
    loop: LoopRow,
    *,
    status: str,
    reason: str,
    started_at: datetime | None,
    finished_at: datetime,
) -> None:
    await conn.execute(
        "UPDATE peach_executions SET status = $4, reason = $5, started_at = COALESCE($6, started_at), "
        "finished_at = $7 WHERE loop_owner = $1 AND loop_name = $2 AND cycle = $3 AND position = $8",
        loop.loop_owner,
        loop.loop_name,
        loop.cycle,
        status,
        reason,
        started_at,
        finished_at,
        loop.position,
    )


async def run_end(conn: Connection, run_id: str) -> tuple[str, str, datetime | None, datetime | None] | None:
    """(state, reason, started_at, finished_at) of the run, or None when it has not ended."""
    row = await conn.fetchrow(
        "SELECT state, reason, started_at, finished_at FROM runs WHERE id = $1 "
        "AND state IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'lost')",
        uuid.UUID(run_id),
    )
    if row is None:
        return None
    return row["state"], row["reason"] or "", row["started_at"], row["finished_at"]


async def organisation_tasks(conn: Connection, *, organisation: str) -> list[tuple[str, str, str, str]]:
    """(project, task, loop name, version label) of the organisation's PEACH tasks now."""
    rows = await conn.fetch(
        f"SELECT t.project, t.task, t.loop_name, {_LABEL.format(alias='t')} AS version_label FROM peach_tasks t "
        f"{_VERSION_JOIN.format(alias='t')} WHERE t.organisation_id = $1 ORDER BY t.project, t.task",
        organisation,
    )
    return [(r["project"], r["task"], r["loop_name"], r["version_label"]) for r in rows]


async def executions(
    conn: Connection, *, organisation: str, task: str | None = None, limit: int = 1000
) -> list[Execution]:
    """The organisation's executions, oldest first (the last `limit` of them)."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT e.*, {_LABEL.format(alias='e')} AS label, r.started_at AS run_started_at, "
        "r.finished_at AS run_finished_at FROM peach_executions e "
        f"{_VERSION_JOIN.format(alias='e')} LEFT JOIN runs r ON r.id = e.run_id AND e.status <> 'running' "
        "WHERE e.organisation_id = $1 AND ($2::text IS NULL OR e.task = $2) "
        "ORDER BY e.started_at DESC, e.id DESC LIMIT $3) AS recent ORDER BY started_at, id",
        organisation,
        task,
        limit,
    )
    return [
        Execution(
            id=r["id"],
            organisation=r["organisation_id"],
            project=r["project"],
            task=r["task"],
            loop_name=r["loop_name"],
            cycle=r["cycle"],
            run_id=str(r["run_id"]) if r["run_id"] is not None else None,
            version_id=r["version_id"],
            version_label=r["label"],
            status=r["status"],
            reason=r["reason"],
            # An ended execution shows its run's own times, read now: the run's start is recorded from its
            # `running` event, which may be applied after its end (events of one run are not ordered), so the copy
            # taken when the loop moved on can still hold the submit time.
            started_at=r["run_started_at"] or r["started_at"],
            finished_at=r["run_finished_at"] or r["finished_at"],
        )
        for r in rows
    ]


async def loop_positions(conn: Connection) -> list[tuple[list[PlanItem], int, bool]]:
    """Each loop's plan, position, and whether the task at the position runs now."""
    rows = await conn.fetch("SELECT plan, position, current_run_id FROM peach_loops")
    return [
        ([PlanItem.from_json(v) for v in json.loads(r["plan"])], r["position"], r["current_run_id"] is not None)
        for r in rows
    ]


async def execution_counts(conn: Connection, *, organisation: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(successes, failures) of every task of the organisation that ran, over all its ended executions."""
    rows = await conn.fetch(
        "SELECT project, task, count(*) FILTER (WHERE status = 'succeeded') AS ok, "
        "count(*) FILTER (WHERE status <> 'succeeded' AND status <> 'running') AS bad "
        "FROM peach_executions WHERE organisation_id = $1 GROUP BY project, task",
        organisation,
    )
    return {(r["project"], r["task"]): (r["ok"], r["bad"]) for r in rows}
