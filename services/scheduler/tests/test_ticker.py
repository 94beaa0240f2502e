"""Cron firing against the real stack: replicas racing for a slot fire it once, and the api starts one run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ame.contracts.trigger.v1 import trigger_pb2
from ame.domain import RunSpec
from ame_platform.bus.publisher import headers_for
from ame_platform.bus.subjects import API_TRIGGERS
from ame_scheduler.repositories import schedules
from ame_scheduler.settings import SchedulerSettings
from ame_scheduler.ticker import Ticker
from tests.integration.clients import py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _far_slot() -> datetime:
    # The stack runs its own ticker on the real clock. The schedule is due only by the injected clock of the
    # tickers under test: a day ahead of real time, so the stack's ticker never sees it as due.
    return (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def _ticker(stack: Stack, now: datetime, **settings: object) -> Ticker:
    options = SchedulerSettings(nats=stack.nats, postgres=stack.postgres, **settings)  # type: ignore[arg-type]
    return Ticker(stack.runtime, options, clock=lambda: now)


async def _create(stack: Stack, *, cron: str, next_fire_at: datetime, task: str) -> str:
    spec = RunSpec(project="sched", task=task, command=py("print('tick')"), labels={"from": "cron"})
    async with stack.runtime.pool.acquire() as conn:
        return await schedules.create_schedule(
            conn, organisation="default", spec=spec, cron=cron, next_fire_at=next_fire_at
        )


async def _fires(stack: Stack, schedule_id: str) -> list[tuple[datetime, bool]]:
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT slot, missed FROM schedule_fires WHERE schedule_id = $1::uuid ORDER BY slot", schedule_id
        )
    return [(r["slot"], r["missed"]) for r in rows]


async def _runs(stack: Stack, task: str) -> list[tuple[str, str, str]]:
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT idempotency_key, trigger, spec->>'command' AS command FROM runs WHERE project = 'sched' "
            "AND task = $1 ORDER BY idempotency_key",
            task,
        )
    return [(r["idempotency_key"], r["trigger"], r["command"]) for r in rows]


def _key(schedule_id: str, slot: datetime) -> str:
    return f"cron:{schedule_id}:{int(slot.timestamp())}"


async def test_two_tickers_racing_fire_each_slot_once_and_the_api_starts_one_run_per_slot(stack: Stack) -> None:
    base = _far_slot()
    schedule_id = await _create(stack, cron="*/5 * * * *", next_fire_at=base, task="nightly")
    now = base + timedelta(minutes=12, seconds=30)
    first, second = _ticker(stack, now, late_after="1h"), _ticker(stack, now, late_after="1h")

    fired = await asyncio.gather(first.tick(), second.tick())

    slots = [base, base + timedelta(minutes=5), base + timedelta(minutes=10)]
    assert sorted(fired) == [0, 3]
    assert await _fires(stack, schedule_id) == [(slot, False) for slot in slots]
    async with stack.runtime.pool.acquire() as conn:
        next_fire_at = await conn.fetchval("SELECT next_fire_at FROM schedules WHERE id = $1::uuid", schedule_id)
    assert next_fire_at == base + timedelta(minutes=15)
    # A later pass at the same instant has nothing left to do.
    assert await first.tick() == 0

    expected = sorted((_key(schedule_id, slot), "schedule", py("print('tick')")) for slot in slots)

    async def one_run_per_slot() -> bool:
        return await _runs(stack, "nightly") == expected

    await wait_until(one_run_per_slot, message="the api to start one run per slot")


async def test_slots_missed_while_no_scheduler_ran_are_recorded_as_missed(stack: Stack) -> None:
    base = _far_slot()
    schedule_id = await _create(stack, cron="0 * * * *", next_fire_at=base, task="hourly")
    ticker = _ticker(stack, base + timedelta(hours=3, minutes=1), late_after="1m")

    assert await ticker.tick() == 1

    hours = [base + timedelta(hours=h) for h in range(4)]
    assert await _fires(stack, schedule_id) == [(hours[0], True), (hours[1], True), (hours[2], True), (hours[3], False)]

    async def only_the_recent_slot_ran() -> bool:
        runs = await _runs(stack, "hourly")
        return [key for key, _, _ in runs] == [_key(schedule_id, hours[3])]

    await wait_until(only_the_recent_slot_ran, message="one run for the recent slot only")


async def test_a_redelivered_fire_event_does_not_start_a_second_run(stack: Stack) -> None:
    base = _far_slot()
    schedule_id = await _create(stack, cron="0 * * * *", next_fire_at=base, task="dedupe")
    assert await _ticker(stack, base + timedelta(minutes=1)).tick() == 1
    await wait_until(lambda: _runs_count(stack, "dedupe", 1), message="the first run")

    # The same slot again under a different Nats-Msg-Id, as a second publisher outside the duplicate window
    # would send it: JetStream stores it, and only the api's idempotency key can stop a second run.
    last = await stack.runtime.js.get_last_msg(stack.runtime.names.events_stream, stack.runtime.names.schedule_fired)
    assert last.data is not None
    event = trigger_pb2.ScheduleFired.FromString(last.data)
    assert event.schedule.id == schedule_id and event.slot.seconds == int(base.timestamp())
    ack = await stack.runtime.js.publish(
        stack.runtime.names.schedule_fired, last.data, headers=headers_for(f"replay:{schedule_id}")
    )
    assert not ack.duplicate

    async def consumed() -> bool:
        info = await stack.runtime.js.consumer_info(stack.runtime.names.events_stream, API_TRIGGERS)
        return bool(info.delivered.stream_seq >= ack.seq and info.num_ack_pending == 0)

    await wait_until(consumed, message="the api to process the replayed event")
    assert [key for key, _, _ in await _runs(stack, "dedupe")] == [_key(schedule_id, base)]


async def _runs_count(stack: Stack, task: str, n: int) -> bool:
    return len(await _runs(stack, task)) == n
