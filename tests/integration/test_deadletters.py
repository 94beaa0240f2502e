"""Poison input on the bus, end to end: every consumer dead-letters what it can never apply and goes on; text
that PostgreSQL refuses is cleaned; a run whose final event is dead-lettered still ends, and a replay ends it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from ame.codecs import log_end_to_pb, state_changed_pb
from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, RunState
from ame_platform.bus.publisher import headers_for
from ame_platform.bus.subjects import (
    API_REGISTRY,
    API_TRIGGERS,
    LAUNCHER_LAUNCH,
    LOGS_ARCHIVE,
    SCHEDULER_MODEL_RUNS,
    SCHEDULER_PIPELINE_RUNS,
)
from tests.integration.clients import Grpc
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_GARBAGE = b"\xff\xff\xff\xff not protobuf"


async def _letters(rest: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await rest.get("/v1/admin/deadletters")
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()["deadletters"]
    return letters


async def _publish(stack: Stack, subject: str, payload: bytes, msg_id: str) -> None:
    await stack.runtime.js.publish(subject, payload, headers=headers_for(msg_id))


async def _running(client: Grpc, run_id: str) -> bool:
    return (await client.get(run_id)).state == run_pb2.RUN_STATE_RUNNING


def _deadletter_metric(stack: Stack) -> int:
    reader = stack.runtime.telemetry.metrics_memory
    assert reader is not None
    data = reader.get_metrics_data()
    return sum(
        int(point.value)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "ame.bus.deadletters"
        for point in metric.data.data_points  # type: ignore[union-attr]
    )


async def test_poison_in_every_consumer_is_dead_lettered_and_the_work_behind_it_flows(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient
) -> None:
    names = stack.runtime.names
    await _publish(stack, names.run_state(RunState.SUCCEEDED), _GARBAGE, "poison-state")
    await _publish(stack, names.schedule_fired, _GARBAGE, "poison-schedule")
    await _publish(stack, names.run_launch, _GARBAGE, "poison-launch")
    await _publish(stack, names.run_log(str(uuid.uuid4())), _GARBAGE, "poison-log")

    # A run behind the poison goes through launcher, registry and archive as usual.
    run = await client.submit("echo behind the poison")
    followed = await client.follow(run.id)
    assert followed.texts == ["behind the poison"]

    async def succeeded() -> bool:
        return (await client.get(run.id)).state == run_pb2.RUN_STATE_SUCCEEDED

    await wait_until(succeeded, timeout=20, message="the registry to record the run's success")

    # Every consumer that reads one of the poisoned subjects: the scheduler's pipeline coordinator and model
    # sequencer read run state events too.
    consumers = {
        API_REGISTRY,
        API_TRIGGERS,
        LAUNCHER_LAUNCH,
        LOGS_ARCHIVE,
        SCHEDULER_PIPELINE_RUNS,
        SCHEDULER_MODEL_RUNS,
    }

    async def every_letter() -> list[dict[str, Any]]:
        letters = await _letters(rest)
        assert len(letters) == len(consumers), letters
        return letters

    letters = await wait_until(every_letter, timeout=20, message="a dead letter from each consumer")
    by_consumer = {letter["consumer"]: letter for letter in letters}
    assert set(by_consumer) == consumers
    assert by_consumer[API_REGISTRY]["subject"] == names.run_state(RunState.SUCCEEDED)
    assert by_consumer[LAUNCHER_LAUNCH]["subject"] == names.run_launch
    for letter in letters:
        assert letter["reason"].startswith("poison: undecodable"), letter
        assert letter["payload_bytes"] == len(_GARBAGE) and letter["replayable"]
    assert _deadletter_metric(stack) == len(consumers)


async def test_a_nul_in_a_final_reason_is_cleaned_and_the_run_ends(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient
) -> None:
    """The probe's repro: a NUL in a cancel reason made the registry and archive consumers fail forever."""
    names = stack.runtime.names
    run = await client.submit("sleep 300")
    await wait_until(lambda: _running(client, run.id), timeout=20, message="the run to be running")
    reason = "bad\x00reason"
    event = state_changed_pb(run.id, 1, RunState.CANCELLED, None, reason).SerializeToString()
    end = log_pb2.LogChunk(
        run_id=run.id, attempt=1, end=log_end_to_pb(LogEnd(state=RunState.CANCELLED, reason=reason))
    ).SerializeToString()
    await _publish(stack, names.run_log(run.id), end, f"test-end:{run.id}")
    await _publish(stack, names.run_state(RunState.CANCELLED), event, f"test-state:{run.id}")

    async def cancelled() -> bool:
        current = await client.get(run.id)
        return current.state == run_pb2.RUN_STATE_CANCELLED and current.reason == "badreason"

    await wait_until(cancelled, timeout=20, message="the run to be cancelled with its reason cleaned")

    async def archived() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            value = await conn.fetchval("SELECT reason FROM log_ends WHERE run_id = $1::uuid", run.id)
        return bool(value == "badreason")

    await wait_until(archived, timeout=20, message="the end to be archived with its reason cleaned")
    assert await _letters(rest) == []


def _refusing(table: str, event: str, condition: str, what: str) -> str:
    """A trigger that fails matching writes on `table` with a check violation: a data error no retry cures."""
    return f"""
CREATE FUNCTION test_refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {condition} THEN
        RAISE EXCEPTION '{what} refused by the test' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_refuse_{table} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION test_refuse_{table}();
"""


def _allowing(table: str) -> str:
    return f"DROP TRIGGER test_refuse_{table} ON {table}; DROP FUNCTION test_refuse_{table}();"


_ALLOW_UPDATES = _allowing("runs")


@pytest.mark.slow
async def test_a_dead_lettered_final_event_is_replayed_and_ends_the_run(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient
) -> None:
    names = stack.runtime.names
    run = await client.submit("sleep 300")
    await wait_until(lambda: _running(client, run.id), timeout=20, message="the run to be running")
    async with stack.runtime.pool.acquire() as conn:
        # A data error on every write of this run: neither the handler nor its dead-letter fallback can apply.
        await conn.execute(_refusing("runs", "UPDATE", f"NEW.id = '{run.id}'::uuid", "update"))
    try:
        event = state_changed_pb(run.id, 1, RunState.FAILED, 3, "boom").SerializeToString()
        await _publish(stack, names.run_state(RunState.FAILED), event, f"test-failed:{run.id}")
        letters = await wait_until(lambda: _letters(rest), timeout=30, message="the final event to be dead-lettered")
    finally:
        async with stack.runtime.pool.acquire() as conn:
            await conn.execute(_ALLOW_UPDATES)
    (letter,) = letters
    assert letter["consumer"] == API_REGISTRY and letter["subject"] == names.run_state(RunState.FAILED)
    assert letter["failures"] == 5 and letter["reason"].startswith("CheckViolationError: update refused")
    assert (await client.get(run.id)).state == run_pb2.RUN_STATE_RUNNING

    replayed = await rest.post(f"/v1/admin/deadletters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text

    async def failed() -> bool:
        current = await client.get(run.id)
        return current.state == run_pb2.RUN_STATE_FAILED and current.exit_code == 3 and current.reason == "boom"

    await wait_until(failed, timeout=20, message="the replayed event to end the run")
    assert await _letters(rest) == []
    again = await rest.post(f"/v1/admin/deadletters/{letter['id']}/replay")
    assert again.status_code == 404 and "not found" in again.json()["error"]


@pytest.mark.slow
async def test_a_final_event_dead_lettered_for_its_reason_still_ends_the_run_in_its_own_state(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient
) -> None:
    names = stack.runtime.names
    run = await client.submit("sleep 300")
    await wait_until(lambda: _running(client, run.id), timeout=20, message="the run to be running")
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            _refusing("runs", "UPDATE", f"NEW.id = '{run.id}'::uuid AND NEW.reason LIKE '%unstorable%'", "update")
        )
    try:
        event = state_changed_pb(run.id, 1, RunState.TIMED_OUT, None, "unstorable text").SerializeToString()
        await _publish(stack, names.run_state(RunState.TIMED_OUT), event, f"test-timeout:{run.id}")

        async def timed_out() -> run_pb2.Run | None:
            current = await client.get(run.id)
            return current if current.state == run_pb2.RUN_STATE_TIMED_OUT else None

        current = await wait_until(timed_out, timeout=30, message="the dead-letter fallback to end the run")
    finally:
        async with stack.runtime.pool.acquire() as conn:
            await conn.execute(_ALLOW_UPDATES)
    assert current.reason.startswith("(reason not recorded: CheckViolationError: update refused")
    (letter,) = await _letters(rest)
    assert letter["consumer"] == API_REGISTRY


async def test_admin_endpoints_refuse_bad_input(rest: httpx.AsyncClient) -> None:
    assert (await rest.get("/v1/admin/deadletters", params={"limit": 0})).status_code == 422
    assert (await rest.get("/v1/admin/deadletters", params={"after": -1})).status_code == 422
    assert (await rest.post("/v1/admin/deadletters/0/replay")).status_code == 422
    assert (await rest.post("/v1/admin/deadletters/abc/replay")).status_code == 422
    missing = await rest.post("/v1/admin/deadletters/12345/replay")
    assert missing.status_code == 404 and missing.json()["error"]


_REFUSE_LEASES = _refusing("leases", "INSERT", "NEW.task = 'refused-task' AND NEW.state = 'active'", "lease")
_ALLOW_LEASES = _allowing("leases")


@pytest.mark.slow
async def test_a_dead_lettered_launch_command_fails_its_run_and_a_replay_does_not_run_it(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(_REFUSE_LEASES)
    try:
        run = await client.submit(f"touch {marker}", task="refused-task")

        async def failed() -> run_pb2.Run | None:
            current = await client.get(run.id)
            return current if current.state == run_pb2.RUN_STATE_FAILED else None

        current = await wait_until(failed, timeout=40, message="the run to fail once its launch is dead-lettered")
    finally:
        async with stack.runtime.pool.acquire() as conn:
            await conn.execute(_ALLOW_LEASES)
    assert current.reason.startswith("the launch command could not be processed: CheckViolationError: lease refused")
    (letter,) = await _letters(rest)
    assert letter["consumer"] == LAUNCHER_LAUNCH and letter["subject"] == stack.runtime.names.run_launch
    # Work behind it is not blocked.
    followed = await client.follow((await client.submit("echo after")).id)
    assert followed.texts == ["after"]

    # Replaying the letter once leases are allowed again must not execute a run already reported failed.
    replayed = await rest.post(f"/v1/admin/deadletters/{letter['id']}/replay")
    assert replayed.status_code == 200, replayed.text

    async def launches_settled() -> bool:
        info = await stack.runtime.js.consumer_info(stack.runtime.names.commands_stream, LAUNCHER_LAUNCH)
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 3

    await wait_until(launches_settled, timeout=30, message="the replayed launch command to be consumed")
    followed = await client.follow((await client.submit("echo behind the replay")).id)
    assert followed.texts == ["behind the replay"]
    assert not marker.exists()
    assert (await client.get(run.id)).state == run_pb2.RUN_STATE_FAILED
    async with stack.runtime.pool.acquire() as conn:
        lease = await conn.fetchrow("SELECT state, final_state FROM leases WHERE run_id = $1::uuid", run.id)
    assert lease is not None and (lease["state"], lease["final_state"]) == ("finished", "failed")
