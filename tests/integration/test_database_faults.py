"""PostgreSQL faults against the whole stack: a database outage never changes a run's outcome, and run records
stay whole whatever order their events arrive in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from ame import codecs
from ame.domain import RunSpec, RunState, TriggerKind, new_run_id
from ame_api import convert as api_convert
from ame_api.repositories import runs as runs_repo
from ame_platform.bus.publisher import headers_for
from ame_platform.embedded import EmbeddedPostgres
from tests.db_outage import database_outage
from tests.integration.clients import Grpc
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_OUTAGE_SECONDS = 5.0


@pytest.mark.slow
async def test_runs_in_flight_through_a_database_outage_all_succeed(
    stack: Stack, client: Grpc, postgres_server: EmbeddedPostgres, pg_dsn: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    # Running when the database goes: they end during the outage, so their leases are finished after it.
    waiting = [
        (await client.submit(f"until [ -e {release} ]; do sleep 0.02; done", project="outage", task=f"wait-{i}")).id
        for i in range(8)
    ]
    await wait_until(
        lambda: _all_in(stack, waiting, {RunState.RUNNING}), timeout=30, message="the waiting runs to start"
    )

    # Recorded before the outage, launched during it: their leases are claimed while the database is away.
    during = [new_run_id() for _ in range(8)]
    async with stack.runtime.pool.acquire() as conn:
        for i, run_id in enumerate(during):
            await runs_repo.create_run(
                conn,
                run_id=run_id,
                organisation="default",
                spec=RunSpec(project="outage", task=f"during-{i}", command="true"),
                trigger=TriggerKind.API,
                parent_run_id="",
                idempotency_key=None,
            )

    # And a stream of `true` runs submitted all along: those accepted start, run and end around the outage.
    streamed: list[str] = []
    refused = 0
    stop_stream = asyncio.Event()

    async def stream() -> None:
        nonlocal refused
        i = 0
        while not stop_stream.is_set():
            i += 1
            try:
                run = await asyncio.wait_for(client.submit("true", project="outage", task=f"stream-{i}"), 10)
            except (grpc.aio.AioRpcError, TimeoutError):
                refused += 1  # the api cannot record a run while the database is away
            else:
                streamed.append(run.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_stream.wait(), 0.05)

    streaming = asyncio.create_task(stream())
    await wait_until(lambda: len(streamed) >= 20, timeout=30, message="the stream to get going")

    async with database_outage(postgres_server, pg_dsn):
        release.touch()
        for run_id in during:
            spec = RunSpec(project="outage", task="during", command="true")
            payload = api_convert.launch_command(run_id, 1, "default", spec)
            await stack.runtime.js.publish(
                stack.runtime.names.run_launch, payload, headers=headers_for(f"launch:{run_id}:1")
            )
        # The outage's length, not a synchronisation.
        await asyncio.sleep(_OUTAGE_SECONDS)

    accepted_before = len(streamed)
    await wait_until(
        lambda: len(streamed) >= accepted_before + 10, timeout=60, message="submissions to be accepted again"
    )
    stop_stream.set()
    await streaming
    every = [*waiting, *during, *streamed]

    async def all_succeeded() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id::text, state, reason, started_at, finished_at FROM runs WHERE id = ANY($1::uuid[])", every
            )
        states = {r["id"]: (r["state"], r["reason"]) for r in rows}
        assert len(rows) == len(every)
        ended = [s for s, _ in states.values() if RunState(s).terminal]
        if len(ended) < len(every):
            return False
        assert {s for s, _ in states.values()} == {"succeeded"}, [v for v in states.values() if v[0] != "succeeded"]
        assert all(r["started_at"] is not None and r["finished_at"] is not None for r in rows)
        return True

    await wait_until(all_succeeded, timeout=90, message="every run to end")

    async def leases_finished() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT run_id::text, state, final_state FROM leases WHERE run_id = ANY($1::uuid[])", every
            )
        assert sorted(r["run_id"] for r in rows) == sorted(every), "one lease per run"
        return all((r["state"], r["final_state"]) == ("finished", "succeeded") for r in rows)

    await wait_until(leases_finished, timeout=30, message="every lease to be finished")
    assert len(every) >= 8 + 8 + 30
    # The fixture checks that no service task died.


async def test_a_run_whose_end_arrives_before_its_start_still_has_both_times(stack: Stack) -> None:
    run_id = new_run_id()
    async with stack.runtime.pool.acquire() as conn:
        await runs_repo.create_run(
            conn,
            run_id=run_id,
            organisation="default",
            spec=RunSpec(project="order", task="reversed", command="true"),
            trigger=TriggerKind.API,
            parent_run_id="",
            idempotency_key=None,
        )
    started = datetime.now(UTC).replace(microsecond=0)
    finished = started + timedelta(seconds=2)
    names = stack.runtime.names

    async def publish(state: RunState, at: datetime, exit_code: int | None = None) -> None:
        event = codecs.state_changed_pb(run_id, 1, state, exit_code, "", at=at).SerializeToString()
        await stack.runtime.js.publish(
            names.run_state(state), event, headers=headers_for(f"state:{run_id}:1:{state.value}")
        )

    async def run() -> tuple[RunState, datetime | None, datetime | None, int | None]:
        async with stack.runtime.pool.acquire() as conn:
            r = await runs_repo.get_run(conn, run_id, organisation="default")
        return r.state, r.started_at, r.finished_at, r.exit_code

    await publish(RunState.SUCCEEDED, finished, exit_code=0)
    await wait_until(lambda: _is_state(run, RunState.SUCCEEDED), message="the end to be applied")
    assert await run() == (RunState.SUCCEEDED, None, finished, 0)

    await publish(RunState.RUNNING, started)
    await wait_until(lambda: _has_start(run), message="the late start to be applied")
    assert await run() == (RunState.SUCCEEDED, started, finished, 0)

    # A repeated start changes nothing.
    async with stack.runtime.pool.acquire() as conn:
        applied = await runs_repo.apply_state(
            conn, run_id=run_id, attempt=1, state=RunState.RUNNING, exit_code=None, reason="", at=finished
        )
    assert applied is None
    assert await run() == (RunState.SUCCEEDED, started, finished, 0)


_Read = Callable[[], Awaitable[tuple[RunState, datetime | None, datetime | None, int | None]]]


async def _is_state(read: _Read, state: RunState) -> bool:
    return (await read())[0] == state


async def _has_start(read: _Read) -> bool:
    return (await read())[1] is not None


async def _all_in(stack: Stack, run_ids: list[str], states: set[RunState]) -> bool:
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT state FROM runs WHERE id = ANY($1::uuid[])", run_ids)
    return len(rows) == len(run_ids) and all(RunState(r["state"]) in states for r in rows)
