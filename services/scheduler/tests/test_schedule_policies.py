"""Schedule sets replacing each other, catch-up and overlap, against the real stack with tickers on fixed clocks.

The stack runs its own ticker on the real clock; every schedule here is due only a day ahead of real time, by
the injected clocks of the tickers under test, so the stack's ticker never fires them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ame.bus_messages import ProjectScheduleSet, ScheduleDef
from ame.domain import RunSpec
from ame.sdk.credentials import bearer, discover_token
from ame_platform.bus.subjects import API_TRIGGERS
from ame_scheduler import activation
from ame_scheduler.settings import SchedulerSettings
from ame_scheduler.ticker import Ticker
from tests.integration.clients import py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

PROJECT = "policies"
MINUTE = timedelta(minutes=1)


def _base() -> datetime:
    return (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def _ticker(stack: Stack, now: datetime) -> Ticker:
    settings = SchedulerSettings(nats=stack.nats, postgres=stack.postgres, late_after="1m")  # type: ignore[arg-type]
    return Ticker(stack.runtime, settings, clock=lambda: now)


def _def(task: str, cron: str = "*/5 * * * *", command: str = "print('tick')", **options: object) -> ScheduleDef:
    spec = RunSpec(project=PROJECT, task=task, command=py(command))
    return ScheduleDef(task=task, cron=cron, spec=spec, **options)  # type: ignore[arg-type]


async def _apply(stack: Stack, generation: int, defs: list[ScheduleDef], now: datetime, version: str = "v") -> bool:
    value = ProjectScheduleSet("default", PROJECT, version * 64 if len(version) == 1 else version, generation, defs)
    async with stack.runtime.pool.acquire() as conn, conn.transaction():
        return await activation.apply(conn, value, now=now)


async def _fires(stack: Stack, task: str) -> list[tuple[datetime, bool]]:
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT f.slot, f.missed FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
               WHERE s.project = $1 AND s.task = $2 ORDER BY f.slot""",
            PROJECT,
            task,
        )
    return [(r["slot"], r["missed"]) for r in rows]


async def _runs(stack: Stack, task: str) -> list[tuple[datetime, str, str]]:
    """(slot, command, state) of each run a schedule started for the task, by slot."""
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT idempotency_key, spec->>'command' AS command, state, organisation_id FROM runs
               WHERE project = $1 AND task = $2 AND trigger = 'schedule'""",
            PROJECT,
            task,
        )
    assert all(r["organisation_id"] == "default" for r in rows)
    found = [
        (datetime.fromtimestamp(int(r["idempotency_key"].rsplit(":", 1)[1]), UTC), r["command"], r["state"])
        for r in rows
    ]
    return sorted(found)


async def _triggers_consumed(stack: Stack) -> None:
    """Wait until the api's triggers consumer has settled every fire published so far."""
    last = await stack.runtime.js.get_last_msg(stack.runtime.names.events_stream, stack.runtime.names.schedule_fired)

    async def settled() -> bool:
        info = await stack.runtime.js.consumer_info(stack.runtime.names.events_stream, API_TRIGGERS)
        return bool(info.delivered.stream_seq >= last.seq and info.num_ack_pending == 0)

    await wait_until(settled, timeout=20, message="the api to handle every fire")


async def test_catch_up_after_a_three_slot_outage_does_what_each_policy_says(stack: Stack) -> None:
    base = _base()
    defs = [_def("none", catch_up="none"), _def("latest", catch_up="latest"), _def("all", catch_up="all")]
    assert await _apply(stack, 1, defs, base - MINUTE)
    assert await _ticker(stack, base).tick() == 3
    # The scheduler is away for the slots at +5, +10 and +15; it is back at +17, when all three are late.
    back = base + timedelta(minutes=17)
    assert await _ticker(stack, back).tick() == 0 + 1 + 3  # none: nothing; latest: +15; all: each

    slots = [base + timedelta(minutes=m) for m in (0, 5, 10, 15)]
    assert await _fires(stack, "none") == [(slots[0], False), (slots[1], True), (slots[2], True), (slots[3], True)]
    assert await _fires(stack, "latest") == [(slots[0], False), (slots[1], True), (slots[2], True), (slots[3], False)]
    assert await _fires(stack, "all") == [(s, False) for s in slots]

    async def runs_as_fired() -> bool:
        none, latest, every = [[r[0] for r in await _runs(stack, t)] for t in ("none", "latest", "all")]
        return none == slots[:1] and latest == [slots[0], slots[3]] and every == slots

    await wait_until(runs_as_fired, timeout=20, message="one run per fired slot, none for the skipped")
    # The next slot is on time again for all three.
    assert await _ticker(stack, base + timedelta(minutes=20, seconds=5)).tick() == 3


async def test_overlap_skip_skips_a_slot_while_the_previous_run_still_runs(stack: Stack) -> None:
    base = _base()
    slow = "import time; time.sleep(60)"
    assert await _apply(stack, 1, [_def("slow", command=slow, overlap="skip")], base - MINUTE)
    assert await _ticker(stack, base).tick() == 1

    async def first_running() -> bool:
        runs = await _runs(stack, "slow")
        return len(runs) == 1 and runs[0][2] == "running"

    await wait_until(first_running, timeout=30, message="the first slot's run to run")
    assert await _ticker(stack, base + 5 * MINUTE).tick() == 1
    await _triggers_consumed(stack)
    runs = await _runs(stack, "slow")
    assert [r[0] for r in runs] == [base], f"the second slot must be skipped while the first runs: {runs}"
    # The fire is recorded (it was due and handled), only its run was skipped.
    assert await _fires(stack, "slow") == [(base, False), (base + 5 * MINUTE, False)]
    async with stack.runtime.pool.acquire() as conn:
        run_id = await conn.fetchval("SELECT id::text FROM runs WHERE task = 'slow'")
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as rest:
        cancelled = await rest.post(f"/v1/runs/{run_id}/cancel", json={"reason": "test over"})
        assert cancelled.status_code == 200, cancelled.text


async def test_a_new_schedule_set_replaces_the_old_without_a_double_or_lost_slot(stack: Stack) -> None:
    base = _base()
    assert await _apply(stack, 1, [_def("job", command="print('v1')")], base - MINUTE, "a")
    assert await _ticker(stack, base).tick() == 1
    # v2 keeps the cron, changes the run and adds a task; the slot fired under v1 does not fire again.
    v2 = [_def("job", command="print('v2')"), _def("extra", cron="0 * * * *")]
    assert await _apply(stack, 2, v2, base + MINUTE, "b")
    assert await _ticker(stack, base + MINUTE).tick() == 0
    # A late redelivery of v1's set changes nothing.
    assert not await _apply(stack, 1, [_def("job", command="print('v1')")], base + 2 * MINUTE, "a")
    assert await _ticker(stack, base + 5 * MINUTE).tick() == 1
    # v3 changes the cron: the next slot is its first after the last fired one.
    v3 = [_def("job", cron="*/10 * * * *", command="print('v3')")]
    assert await _apply(stack, 3, v3, base + 6 * MINUTE, "c")
    assert await _ticker(stack, base + 9 * MINUTE).tick() == 0
    assert await _ticker(stack, base + 10 * MINUTE).tick() == 1
    # "extra" left the set with v3: it no longer fires.
    assert await _ticker(stack, base + 60 * MINUTE).tick() == 1  # job's +60 (late ones skipped), not extra's

    fires = await _fires(stack, "job")
    assert [s for s, missed in fires if not missed] == [base, base + 5 * MINUTE, base + 10 * MINUTE, base + 60 * MINUTE]
    assert await _fires(stack, "extra") == []

    async def one_run_per_slot() -> bool:
        runs = await _runs(stack, "job")
        return [(s, c) for s, c, _ in runs] == [
            (base, py("print('v1')")),
            (base + 5 * MINUTE, py("print('v2')")),
            (base + 10 * MINUTE, py("print('v3')")),
            (base + 60 * MINUTE, py("print('v3')")),
        ]

    await wait_until(one_run_per_slot, timeout=20, message="one run per slot, each from the set then in force")


async def test_overlap_queue_keeps_one_slot_waiting_for_the_previous_run(stack: Stack) -> None:
    base = _base()
    slow = "import time; time.sleep(60)"
    assert await _apply(stack, 1, [_def("queued", command=slow, overlap="queue")], base - MINUTE)
    assert await _ticker(stack, base).tick() == 1

    async def first_running() -> bool:
        runs = await _runs(stack, "queued")
        return len(runs) == 1 and runs[0][2] == "running"

    await wait_until(first_running, timeout=30, message="the first slot's run to run")
    # The +5 slot waits for it; the +10 slot finds a slot waiting already and is dropped.
    assert await _ticker(stack, base + 5 * MINUTE).tick() == 1

    async def one_waiting() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            key = await conn.fetchval("SELECT idempotency_key FROM schedule_waiting WHERE task = 'queued'")
        return key is not None and key.endswith(f":{int((base + 5 * MINUTE).timestamp())}")

    await wait_until(one_waiting, timeout=20, message="the +5 slot to wait")
    assert await _ticker(stack, base + 10 * MINUTE).tick() == 1
    await _triggers_consumed_except_waiting(stack)
    assert [r[0] for r in await _runs(stack, "queued")] == [base]

    async with stack.runtime.pool.acquire() as conn:
        run_id = await conn.fetchval("SELECT id::text FROM runs WHERE task = 'queued'")
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as rest:
        cancelled = await rest.post(f"/v1/runs/{run_id}/cancel", json={"reason": "let the next one run"})
        assert cancelled.status_code == 200, cancelled.text

    async def waiting_slot_ran() -> bool:
        return [r[0] for r in await _runs(stack, "queued")] == [base, base + 5 * MINUTE]

    await wait_until(waiting_slot_ran, timeout=30, message="the waiting slot's run once the first ended")

    async def waiting_released() -> bool:
        # The api releases the waiting row right after the run it started is recorded, not in the same transaction.
        async with stack.runtime.pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM schedule_waiting") == 0

    await wait_until(waiting_released, timeout=10, message="the waiting row to be released")
    async with stack.runtime.pool.acquire() as conn:
        second = await conn.fetchval(
            "SELECT id::text FROM runs WHERE task = 'queued' AND state IN ('queued', 'launching', 'running')"
        )
    if second is not None:
        async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as rest:
            await rest.post(f"/v1/runs/{second}/cancel", json={"reason": "test over"})


async def _triggers_consumed_except_waiting(stack: Stack) -> None:
    """Every fire delivered to the api, and all but the one held waiting settled."""
    last = await stack.runtime.js.get_last_msg(stack.runtime.names.events_stream, stack.runtime.names.schedule_fired)

    async def settled() -> bool:
        info = await stack.runtime.js.consumer_info(stack.runtime.names.events_stream, API_TRIGGERS)
        return bool(info.delivered.stream_seq >= last.seq and info.num_ack_pending == 1)

    await wait_until(settled, timeout=20, message="the api to handle every fire but the waiting one")
