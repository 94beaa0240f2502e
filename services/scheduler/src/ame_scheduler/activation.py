"""A project's schedule set, as the api declares it (ProjectSchedules), replacing the set before atomically.

One transaction per message, under the project's row in `schedule_projects`: a generation older than the one
applied is ignored (a late or redelivered message cannot bring old schedules back). A task that keeps its
schedule keeps its row, its id and its next slot, so a slot due across the switch fires once (same
`cron:<schedule>:<slot>` key) and none is lost; a task whose cron or zone changed starts at its new expression's
first slot after the later of now and its last fired slot (so does a resumed one: slots skipped while it was
paused are not caught up); a task that left the set is deactivated (kept, so it
returns with its id and fires if it comes back). The ticker's row locks serialise this with a tick in progress.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from ame import cron
from ame.bus_messages import ProjectScheduleSet, ScheduleDef
from ame_platform.bus.consumer import Poison
from ame_platform.clock import Clock
from ame_platform.db import Connection
from ame_platform.runtime import Runtime
from ame_scheduler import convert
from ame_scheduler.repositories import schedules

log = logging.getLogger(__name__)


class Activation:
    def __init__(self, runtime: Runtime, clock: Clock) -> None:
        self._rt = runtime
        self._clock = clock

    async def handle(self, msg: Msg) -> None:
        try:
            value = convert.parse_project_schedules(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        async with self._rt.pool.acquire() as conn, conn.transaction():
            applied = await apply(conn, value, now=self._clock.now())
        if applied:
            log.info(
                "project %s/%s: %d schedule(s) from version %s (generation %d)",
                value.organisation,
                value.project,
                len(value.schedules),
                value.project_version_id[:12],
                value.generation,
            )


def _first_slot(definition: ScheduleDef, schedule_id: str | None, after: datetime) -> tuple[datetime, datetime]:
    slot = cron.next_slot(definition.cron, after, definition.timezone)
    jitter = cron.jitter_seconds(schedule_id, slot, definition.jitter_seconds) if schedule_id else 0.0
    return slot, slot + timedelta(seconds=jitter)


async def apply(conn: Connection, value: ProjectScheduleSet, *, now: datetime) -> bool:
    """Replace the project's schedules with `value`'s (inside the caller's transaction); False when stale."""
    if not await schedules.lock_project(
        conn,
        organisation=value.organisation,
        project=value.project,
        generation=value.generation,
        version_id=value.project_version_id,
    ):
        return False
    existing = {
        e.task: e
        for e in await schedules.project_schedules(conn, organisation=value.organisation, project=value.project)
    }
    wanted = {d.task: d for d in value.schedules}
    for task, definition in wanted.items():
        old = existing.get(task)
        if old is None:
            slot, _ = _first_slot(definition, None, now)
            schedule_id = await schedules.create_schedule(
                conn,
                organisation=value.organisation,
                spec=definition.spec,
                cron=definition.cron,
                next_fire_at=slot,
                timezone=definition.timezone,
                catch_up=definition.catch_up,
                overlap=definition.overlap,
                jitter_seconds=definition.jitter_seconds,
                project_version_id=value.project_version_id,
                enabled=definition.enabled,
            )
            _, due_at = _first_slot(definition, schedule_id, now)
            await schedules.advance(conn, [schedules.Advance(schedule_id, slot, due_at, None)])
            continue
        resumed = definition.enabled and not old.enabled
        if old.active and not resumed and old.cron == definition.cron and old.timezone == definition.timezone:
            next_fire_at = old.next_fire_at  # same slots: keep the one due next, so none is lost or doubled
        else:
            after = max(now, old.last_slot) if old.last_slot is not None else now
            next_fire_at = cron.next_slot(definition.cron, after, definition.timezone)
        due_at = next_fire_at + timedelta(seconds=cron.jitter_seconds(old.id, next_fire_at, definition.jitter_seconds))
        await schedules.update_definition(
            conn,
            schedule_id=old.id,
            definition=definition,
            version_id=value.project_version_id,
            next_fire_at=next_fire_at,
            due_at=due_at,
        )
    await schedules.deactivate(conn, [e.id for task, e in existing.items() if task not in wanted and e.active])
    return True
