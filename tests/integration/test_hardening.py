"""Regression tests for what a review of the first slice found: oversized output, cancel races, database
outages, hostile input and idempotency misuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from nats.js.errors import NotFoundError

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import RunState
from ame_platform.embedded import EmbeddedPostgres
from tests.db_outage import database_outage
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _state(client: Grpc, run_id: str) -> int:
    return (await client.get(run_id)).state


async def test_output_with_long_lines_arrives_whole_and_the_run_ends(client: Grpc) -> None:
    # 40 lines of 60 KB: far more than one bus message if chunks were capped by line count alone.
    run = await client.submit(py("for i in range(40): print(str(i % 10) * 60000)"))
    followed = await asyncio.wait_for(client.follow(run.id), timeout=60)
    assert followed.texts == [str(i % 10) * 60000 for i in range(40)]
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED


async def test_a_run_cancelled_right_after_submit_never_executes(client: Grpc, stack: Stack, tmp_path: Path) -> None:
    markers = tmp_path / "executed"
    markers.mkdir()
    runs = []
    for _ in range(15):
        # A cancel that arrives after the process started ends it (SIGTERM to its group); the sleep gives that
        # kill a margin on a loaded machine, so a marker means the run really went on after its cancel.
        run = await client.submit(f"sleep 2; touch {markers}/$AME_RUN_ID")
        await client.stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=run.id, reason="changed my mind"))
        runs.append(run.id)
    for run_id in runs:
        followed = await asyncio.wait_for(client.follow(run_id), timeout=30)
        assert followed.end is not None
        assert followed.end.end.state == run_pb2.RUN_STATE_CANCELLED
    await wait_until(lambda: all(launcher.active_runs == 0 for launcher in stack.launchers), message="launchers idle")
    assert sorted(p.name for p in markers.iterdir()) == []
    async with stack.runtime.pool.acquire() as conn:
        finals = await conn.fetch("SELECT final_state FROM leases WHERE run_id = ANY($1::uuid[])", runs)
    assert {r["final_state"] for r in finals} <= {"cancelled"}


async def test_registry_catches_up_after_a_database_outage(
    client: Grpc, stack: Stack, postgres_server: EmbeddedPostgres, pg_dsn: str, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    run = await client.submit(f"sleep 1.5; touch {done}; echo done")
    await wait_until(lambda: _is(client, run.id, run_pb2.RUN_STATE_RUNNING), message="running")
    succeeded = stack.runtime.names.run_state(RunState.SUCCEEDED)

    async def success_published() -> bool:
        try:
            await stack.runtime.js.get_last_msg(stack.runtime.names.events_stream, succeeded)
        except NotFoundError:
            return False
        return True

    async with database_outage(postgres_server, pg_dsn):
        # The run ends while the registry cannot be written: its events must wait, not be dropped.
        await wait_until(done.exists, timeout=30, message="the run to end during the outage")
        await wait_until(success_published, timeout=30, message="its end to be published during the outage")
    await wait_until(lambda: _is(client, run.id, run_pb2.RUN_STATE_SUCCEEDED), timeout=40, message="succeeded")


async def test_a_follower_rides_out_a_database_outage(
    client: Grpc, stack: Stack, postgres_server: EmbeddedPostgres, pg_dsn: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    # Prints, waits (quietly, so the follower checks the registry) until the outage is over, then prints more.
    run = await client.submit(
        py(
            "import os, time\n"
            "print('before', flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
            "print('after', flush=True)"
        )
    )
    stream = client.stub.FollowLogs(ame_service_pb2.FollowLogsRequest(run_id=run.id, batched=False))
    events = aiter(stream)
    first = await asyncio.wait_for(anext(events), timeout=30)
    assert first.line.text == "before"  # the follow is under way before the database goes
    async with database_outage(postgres_server, pg_dsn):
        # Longer than the follower's idle check: it asks the registry about the run while the database is away.
        pending = asyncio.ensure_future(anext(events))
        done, _ = await asyncio.wait([pending], timeout=3)
        assert not done, "the follow ended or moved on during the outage"
    go.touch()
    after = await asyncio.wait_for(pending, timeout=60)
    assert after.line.text == "after"
    end = await asyncio.wait_for(anext(events), timeout=60)
    assert end.WhichOneof("event") == "end" and end.end.state == run_pb2.RUN_STATE_SUCCEEDED


async def _is(client: Grpc, run_id: str, state: int) -> bool:
    return await _state(client, run_id) == state


async def test_hostile_and_mistaken_input_gets_4xx(rest: httpx.AsyncClient, client: Grpc) -> None:
    cases = [
        {"command": "echo a\u0000b"},
        {"command": "echo hi", "project": "bad\u0000name"},
        {"command": "echo hi", "environment": [{"key": "A=B", "value": "1"}]},
        {"comand": "echo typo"},
        {"command": "echo hi", "timeout_second": 5},
        {"command": "x" * (200 * 1024)},
        {"command": "echo hi", "labels": {f"k{i}": "v" for i in range(100)}},
    ]
    for body in cases:
        response = await rest.post("/v1/runs", json=body)
        assert response.status_code == 422, (body.keys(), response.text)
        assert response.json()["error"]
    surrogate = await rest.post(
        "/v1/runs", content=b'{"command": "echo \\ud800"}', headers={"content-type": "application/json"}
    )
    assert surrogate.status_code == 422
    huge = await rest.post("/v1/runs", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"})
    assert huge.status_code == 413
    assert (await rest.get("/v1/runs", params={"page_token": "nonsense"})).status_code == 422

    for request, code in [
        (ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="a\u0000b")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), parent_run_id="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ame_service_pb2.SubmitRunRequest(
                spec=run_pb2.RunSpec(command="true"), parent_run_id="01a1ff6f-0f34-7a07-90d1-1a37af2413eb"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ame_service_pb2.SubmitRunRequest(
                spec=run_pb2.RunSpec(command="true"), trigger=run_pb2.TRIGGER_KIND_SCHEDULE
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.stub.SubmitRun(request)
        assert failed.value.code() == code
        assert "Unexpected" not in (failed.value.details() or "")
        assert "pydantic" not in (failed.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(page_token="nonsense"))
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_idempotency_key_returns_the_same_run_and_refuses_a_different_one(rest: httpx.AsyncClient) -> None:
    body = {"project": "idem", "command": "echo once"}
    first = await rest.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    again = await rest.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    other = await rest.post("/v1/runs", json={**body, "command": "echo twice"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert first.json()["id"] in other.json()["error"]


async def test_a_chunked_body_without_content_length_is_read_and_capped(rest: httpx.AsyncClient) -> None:
    async def small() -> AsyncIterator[bytes]:
        yield b'{"task": "chunked", '
        yield b'"command": "echo chunked"}'

    async def huge() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    accepted = await rest.post("/v1/runs", content=small(), headers={"content-type": "application/json"})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["spec"]["command"] == "echo chunked"
    refused = await rest.post("/v1/runs", content=huge(), headers={"content-type": "application/json"})
    assert refused.status_code == 413
