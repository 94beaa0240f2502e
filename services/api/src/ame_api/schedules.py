"""Schedules at the front door: a trigger version's schedules, their list, pause, resume and trigger-now.

The api keeps its own copy of each project's schedules (`project_schedules`) and tells the scheduler, which
owns firing state, the project's whole schedule set through the outbox (ProjectSchedules, with a generation
the scheduler uses to ignore a stale set). Nothing is ever lost between the two: the set is written in the
same transaction as the change that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ame import bus_messages, cron
from ame.bus_messages import ProjectScheduleSet, ScheduleDef
from ame.domain import RunSpec, TriggerKind
from ame.domain.principals import Principal
from ame.domain.runs import Run
from ame.domain.schedules import ScheduleSummary
from ame.run_specs import run_spec_for_any_task
from ame.spec import ExternalTemplates, Project, SpecError, resolve_task
from ame_api import organisations
from ame_api.repositories import projects as projects_repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import schedules as repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import InvalidRequest, RunService, refuse_over_bus
from ame_platform.bus.publisher import headers_for
from ame_platform.clock import Clock
from ame_platform.db import Connection
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

NEXT_FIRES = 3


def schedules_of(
    spec: Project, project: str, version_id: str, *, external_templates: ExternalTemplates | None = None
) -> list[ScheduleDef]:
    """The schedules a version declares: each task with `triggers.schedule` (the old dialect's recurring_tasks
    included), as the run a remote `ame task run` of it would be. None when the file says enableTriggers: false.
    A pipeline's schedule starts the whole pipeline. InvalidRequest for a schedule the server cannot run (a
    pipeline inside a parallel group), checked at commit as hooks are."""
    if spec.enable_triggers is False:
        return []
    found: list[ScheduleDef] = []
    for name in spec.task_names():
        try:
            task = resolve_task(spec, name, external_templates=external_templates)
        except SpecError:
            continue  # validated at commit; a task that does not resolve has no schedule to run
        if task.schedule is None:
            continue
        try:
            run_spec = run_spec_for_any_task(task, project=project, project_version_id=version_id)
        except ValueError as exc:
            # Refused rather than dropped: a schedule accepted and never fired is worse than a clear error.
            raise InvalidRequest(f"task {name!r} has a schedule, but the server cannot run it: {exc}") from None
        options = task.triggers
        found.append(
            ScheduleDef(
                task=name,
                cron=task.schedule,
                spec=run_spec,
                timezone=options.timezone if options else "UTC",
                catch_up=options.catch_up if options else "none",
                overlap=options.overlap if options else "allow",
                jitter_seconds=options.jitter if options else 0.0,
            )
        )
    return found


@dataclass(frozen=True)
class Outboxed:
    outbox_id: int
    msg_id: str
    payload: bytes


async def write_schedule_set(
    runtime: Runtime,
    conn: Connection,
    *,
    organisation: str,
    project: str,
    project_id: str,
    version_id: str,
    generation: int,
    rows: Sequence[repo.ScheduleRow],
) -> Outboxed:
    """Put the project's whole schedule set in the outbox (inside the caller's transaction)."""
    msg_id = bus_messages.schedules_msg_id(project_id, generation)
    payload = bus_messages.encode_project_schedules(
        ProjectScheduleSet(organisation, project, version_id, generation, [r.definition() for r in rows])
    )
    # The scheduler could never receive it, and no schedule of the project would fire: refuse the activation.
    refuse_over_bus(runtime, payload, "the project's schedule set (each schedule carries its run)")
    outbox_id = await runs_repo.add_outbox(
        conn, msg_id=msg_id, subject=runtime.names.project_schedules, payload=payload, headers=headers_for(msg_id)
    )
    return Outboxed(outbox_id, msg_id, payload)


async def publish_now(runtime: Runtime, sent: Outboxed) -> None:
    # The outbox relay publishes it later if this fails; Nats-Msg-Id makes a double publish harmless.
    try:
        await runtime.js.publish(
            runtime.names.project_schedules, sent.payload, headers=headers_for(sent.msg_id), timeout=5.0
        )
    except Exception:
        log.warning("schedule set %s not published; the outbox relay will retry", sent.msg_id, exc_info=True)
        return
    async with runtime.pool.acquire() as conn:
        await runs_repo.delete_outbox(conn, sent.outbox_id)


def summaries(
    clock: Clock,
    organisation: str,
    rows: Sequence[repo.ScheduleRow],
    last: dict[tuple[str, str], tuple[str, str, datetime]],
) -> list[ScheduleSummary]:
    now = clock.now()
    out = []
    for r in rows:
        fires = []
        slot = now
        if not r.paused:
            for _ in range(NEXT_FIRES):
                slot = cron.next_slot(r.cron, slot, r.timezone)
                fires.append(slot)
        run = last.get((r.project, r.task))
        out.append(
            ScheduleSummary(
                organisation=organisation,
                project=r.project,
                task=r.task,
                cron=r.cron,
                timezone=r.timezone,
                catch_up=r.catch_up,
                overlap=r.overlap,
                jitter_seconds=r.jitter_seconds,
                state="paused" if r.paused else "active",
                project_version_id=r.project_version_id,
                next_fire_times=fires,
                last_run_id=run[0] if run else "",
                last_run_state=run[1] if run else "",
                last_run_at=run[2] if run else None,
            )
        )
    return out


class ScheduleService:
    def __init__(self, runtime: Runtime, runs: RunService, clock: Clock) -> None:
        self._rt = runtime
        self._runs = runs
        self._clock = clock

    async def list(
        self, principal: Principal, *, organisation: str | None = None, project: str | None = None
    ) -> list[ScheduleSummary]:
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_all(conn, organisation=org, project=project or None)
            last = await repo.last_runs(conn, organisation=org, keys=[(r.project, r.task) for r in rows])
        return summaries(self._clock, org, rows, last)

    async def _find(self, conn: Connection, org: str, name: str, project: str | None) -> repo.ScheduleRow:
        rows = await repo.find_by_task(conn, organisation=org, task=name, project=project or None)
        if not rows:
            raise NotFound(f"schedule {name[:200]!r} not found" + (f" in project {project[:200]!r}" if project else ""))
        if len(rows) > 1:
            raise InvalidRequest(
                f"schedule {name!r} exists in projects {', '.join(r.project for r in rows)}; name the project"
            )
        return rows[0]

    async def set_paused(
        self, principal: Principal, name: str, *, paused: bool, project: str | None = None
    ) -> ScheduleSummary:
        org = principal.organisation
        async with self._rt.pool.acquire() as conn, conn.transaction():
            row = await self._find(conn, org, name, project)
            project_id = await projects_repo.find_project_id(conn, organisation=org, name=row.project)
            assert project_id is not None
            generation = await repo.next_generation(conn, project_id=project_id)
            await repo.set_paused(conn, organisation=org, project=row.project, task=row.task, paused=paused)
            rows = await repo.for_project(conn, organisation=org, project=row.project)
            sent = await write_schedule_set(
                self._rt,
                conn,
                organisation=org,
                project=row.project,
                project_id=project_id,
                version_id=row.project_version_id,
                generation=generation,
                rows=rows,
            )
            last = await repo.last_runs(conn, organisation=org, keys=[(row.project, row.task)])
        await publish_now(self._rt, sent)
        changed = next(r for r in rows if r.task == row.task)
        return summaries(self._clock, org, [changed], last)[0]

    async def trigger(self, principal: Principal, name: str, *, project: str | None = None) -> Run:
        """Start the schedule's run now, outside its slots (as the caller, marked as a schedule's run)."""
        async with self._rt.pool.acquire() as conn:
            row = await self._find(conn, principal.organisation, name, project)
        spec: RunSpec = row.spec
        return await self._runs.submit(principal, spec, trigger=TriggerKind.SCHEDULE)
