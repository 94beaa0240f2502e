"""Fires due schedule slots as ScheduleFired events.

Exactly-once firing is not promised by anyone (Kubernetes CronJob, Temporal, Airflow); what AME promises is
at most one run per slot: the slot is recorded under a unique key in the same transaction that advances the
schedule, the event carries `Nats-Msg-Id = cron:<schedule>:<slot>`, and the api creates the run with that
same key as its idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ame import bus_messages
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime
from ame_scheduler import convert, planner
from ame_scheduler.repositories import schedules
from ame_scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self, runtime: Runtime, settings: SchedulerSettings, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

    async def tick(self) -> int:
        """Fire every due slot once; returns how many slots fired."""
        now = self._clock()
        fired = 0
        catch_up = timedelta(seconds=self._settings.catch_up_window)
        async with self._rt.pool.acquire() as conn, conn.transaction():
            for due in await schedules.claim_due_schedules(conn, now=now, limit=100):
                plan = planner.plan(due.cron, due.next_fire_at, now, catch_up)
                for slot in plan.missed:
                    await schedules.create_fire(conn, schedule_id=due.id, slot=slot, missed=True)
                    log.warning("schedule %s missed slot %s (older than the catch-up window)", due.id, slot)
                for slot in plan.fire:
                    if await schedules.create_fire(conn, schedule_id=due.id, slot=slot, missed=False):
                        msg_id = bus_messages.cron_msg_id(due.id, int(slot.timestamp()))
                        await self._rt.js.publish(
                            self._rt.names.schedule_fired,
                            convert.schedule_fired(due.id, due.organisation, due.cron, due.spec, slot),
                            headers=headers_for(msg_id),
                        )
                        fired += 1
                await schedules.update_next_fire(conn, schedule_id=due.id, next_fire_at=plan.next_fire_at)
        return fired
