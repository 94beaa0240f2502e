"""Fires due schedule slots as ScheduleFired events, exactly once per slot across any number of replicas.

A tick claims due schedules with `FOR UPDATE SKIP LOCKED`, records each slot it fires (with its event) under
the unique key (schedule, slot) and advances the schedules, all in one transaction, and publishes only after
the commit: no row lock is held while the bus is slow or away. A replica that dies before its commit fired
nothing (another takes the rows); one that dies between its commit and its publish leaves fires without
`published_at`, which any replica's relay publishes once `relay_after` has passed. The event carries
`Nats-Msg-Id = cron:<schedule>:<slot>` and the api starts the run under that same idempotency key, so a fire
published twice still starts one run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ame import bus_messages, cron
from ame_platform.bus.publisher import headers_for
from ame_platform.clock import Clock
from ame_platform.runtime import Runtime
from ame_scheduler import convert, planner
from ame_scheduler.repositories import schedules
from ame_scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


class _Fixed:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now()

    def seconds(self, simulated: float) -> float:
        return simulated


def _as_clock(clock: Clock | Callable[[], datetime] | None) -> Clock:
    if clock is None:
        return _Fixed(lambda: datetime.now(UTC))
    if callable(clock) and not hasattr(clock, "now"):
        return _Fixed(clock)
    return clock  # type: ignore[return-value]


class Ticker:
    def __init__(
        self,
        runtime: Runtime,
        settings: SchedulerSettings,
        clock: Clock | Callable[[], datetime] | None = None,
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._clock = _as_clock(clock)
        self._publishing = asyncio.Semaphore(settings.publish_concurrency)

    async def tick(self) -> int:
        """Fire every due slot once; returns how many slots this replica fired."""
        # Each batch is published while the next is claimed and recorded: recording every due slot is what
        # bounds the lag, and a publish never holds a row lock either way.
        publishing: list[asyncio.Task[int]] = []
        try:
            while True:
                batch, claimed = await self._claim_and_record()
                publishing.append(asyncio.create_task(self._publish(batch)))
                if claimed < self._settings.tick_batch:
                    break
        finally:
            counts = await asyncio.gather(*publishing)
        return sum(counts)

    async def _claim_and_record(self) -> tuple[list[tuple[str, datetime, bytes]], int]:
        now = self._clock.now()
        late_after = timedelta(seconds=self._settings.late_after)
        fires: list[schedules.NewFire] = []
        advances: list[schedules.Advance] = []
        async with self._rt.pool.acquire() as conn, conn.transaction():
            due_list = await schedules.claim_due_schedules(conn, now=now, limit=self._settings.tick_batch)
            for due in due_list:
                plan = planner.plan(
                    due.cron,
                    due.next_fire_at,
                    now,
                    timezone=due.timezone,
                    catch_up=due.catch_up,
                    late_after=late_after,
                    cap=self._settings.catch_up_max,
                    jitter=lambda slot, d=due: cron.jitter_seconds(d.id, slot, d.jitter_seconds),  # type: ignore[misc]
                )
                for slot in plan.missed:
                    fires.append(schedules.NewFire(due.id, slot, True, None))
                    log.warning("schedule %s missed slot %s (catchUp: %s)", due.id, slot, due.catch_up)
                for slot in plan.fire:
                    payload = convert.schedule_fired(due, slot, fired_at=now)
                    fires.append(schedules.NewFire(due.id, slot, False, payload))
                last = max([*plan.fire, *plan.missed], default=None)
                advances.append(schedules.Advance(due.id, plan.next_fire_at, plan.next_due_at, last))
            # The fire is recorded now, not when the tick began: what "slot to fire" figures measure.
            new = await schedules.record_fires(conn, fires, fired_at=self._clock.now())
            await schedules.advance(conn, advances)
        batch = [(f.schedule_id, f.slot, f.payload) for f in fires if not f.missed and (f.schedule_id, f.slot) in new]
        return [(s, t, p) for s, t, p in batch if p is not None], len(due_list)

    async def _publish(self, fires: list[tuple[str, datetime, bytes]]) -> int:
        """Publish recorded fires (outside any transaction) and mark those that went out; the rest wait for the
        relay."""
        if not fires:
            return 0
        results = await asyncio.gather(*(self._publish_one(*fire) for fire in fires))
        done = [(s, t) for (s, t, _), ok in zip(fires, results, strict=True) if ok]
        async with self._rt.pool.acquire() as conn:
            await schedules.mark_published(conn, done)
        return len(done)

    async def _publish_one(self, schedule_id: str, slot: datetime, payload: bytes) -> bool:
        async with self._publishing:
            try:
                await self._rt.js.publish(
                    self._rt.names.schedule_fired,
                    payload,
                    headers=headers_for(bus_messages.cron_msg_id(schedule_id, int(slot.timestamp()))),
                    timeout=5.0,
                )
            except Exception:
                log.warning("fire of schedule %s at %s not published; the relay retries it", schedule_id, slot)
                return False
            return True

    async def relay(self) -> int:
        """Publish fires that a replica recorded and did not publish (it died, or the bus was away)."""
        async with self._rt.pool.acquire() as conn:
            rows = await schedules.claim_unpublished(
                conn, limit=self._settings.tick_batch, lease_seconds=self._settings.relay_after
            )
        return await self._publish(rows)
