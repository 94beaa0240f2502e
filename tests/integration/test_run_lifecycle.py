"""A run's whole journey through api, launcher and logs, driven over gRPC and REST against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from tests.integration.clients import Grpc, py, sse_events
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def test_submitted_run_is_queued_then_succeeds_with_its_output(client: Grpc) -> None:
    run = await client.submit(py("import sys; print('hello'); print('oops', file=sys.stderr)"), project="p", task="t")
    assert run.state == run_pb2.RUN_STATE_QUEUED
    followed = await client.follow(run.id)
    assert sorted(followed.lines) == [(0, "stdout", "hello"), (1, "stderr", "oops")] or sorted(followed.lines) == [
        (0, "stderr", "oops"),
        (1, "stdout", "hello"),
    ]
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED
    assert followed.end.end.exit_code == 0

    async def finished() -> run_pb2.Run | None:
        current = await client.get(run.id)
        return current if current.state == run_pb2.RUN_STATE_SUCCEEDED else None

    done = await wait_until(finished, message="registry to record success")
    assert done.exit_code == 0
    assert done.HasField("started_at")
    assert done.HasField("finished_at")
    assert done.spec.project == "p"
    assert done.spec.task == "t"


async def test_failing_run_reports_its_exit_code(client: Grpc) -> None:
    run = await client.submit(py("import sys; sys.exit(7)"))
    followed = await client.follow(run.id)
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_FAILED
    assert followed.end.end.exit_code == 7
    await wait_until(lambda: _state(client, run.id, run_pb2.RUN_STATE_FAILED), message="failed in registry")


async def _state(client: Grpc, run_id: str, state: int) -> bool:
    return (await client.get(run_id)).state == state


async def test_every_line_arrives_in_order_for_live_and_late_followers(client: Grpc) -> None:
    n = 3000
    run = await client.submit(
        py(f"import time\nfor i in range({n}):\n    print(f'line {{i}}')\n    if i == 1500: time.sleep(0.3)")
    )
    live = asyncio.create_task(client.follow(run.id))
    second = asyncio.create_task(client.follow(run.id))
    followers = await asyncio.gather(live, second)
    late = await client.follow(run.id)
    from_middle = await client.follow(run.id, from_seq=2000)
    expected = [f"line {i}" for i in range(n)]
    for followed in [*followers, late]:
        assert followed.texts == expected
        assert [seq for seq, _, _ in followed.lines] == list(range(n))
        assert followed.end is not None
        assert followed.end.end.total_lines == n
    assert from_middle.texts == expected[2000:]


async def test_late_follower_gets_history_from_the_archive_when_the_bus_has_dropped_it(
    client: Grpc, stack: Stack
) -> None:
    run = await client.submit(py("for i in range(50): print(i)"))
    await client.follow(run.id)

    async def archived() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT count(*) FROM log_ends WHERE run_id = $1::uuid", run.id))

    await wait_until(archived, message="the logs service to archive the run's end")
    # What a run whose output aged out of the LOGS stream looks like: nothing left on its subject.
    await stack.runtime.js.purge_stream(stack.runtime.names.logs_stream, subject=stack.runtime.names.run_log(run.id))
    followed = await client.follow(run.id)
    assert followed.texts == [str(i) for i in range(50)]
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED


async def test_rest_submit_get_list_and_sse_follow(rest: httpx.AsyncClient) -> None:
    created = await rest.post("/v1/runs", json={"project": "web", "task": "hello", "command": py("print('hi')")})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["state"] == "queued"
    events = [e async for e in sse_events(rest, f"/v1/runs/{run['id']}/logs")]
    kind, data = events[0]
    assert kind == "lines"
    line = data["lines"][0]  # type: ignore[index]
    assert data == {"lines": [{"seq": 0, "stream": "stdout", "text": "hi", "at": line["at"]}]}
    assert str(line["at"]).endswith("Z")
    assert events[-1][0] == "end"
    assert events[-1][1]["state"] == "succeeded"
    assert events[-1][1]["exit_code"] == 0

    async def listed() -> bool:
        page = (await rest.get("/v1/runs", params={"project": "web", "state": "succeeded"})).json()
        return [r["id"] for r in page["runs"]] == [run["id"]]

    await wait_until(listed, message="the run to be listed as succeeded")
    got = (await rest.get(f"/v1/runs/{run['id']}")).json()
    assert got["exit_code"] == 0
    assert got["spec"]["task"] == "hello"


async def test_bad_requests_get_clear_4xx_errors(rest: httpx.AsyncClient, client: Grpc) -> None:
    empty = await rest.post("/v1/runs", json={"command": "   "})
    assert empty.status_code == 422
    assert "command" in empty.json()["error"]
    assert "empty" in empty.json()["error"]
    missing = await rest.post("/v1/runs", json={"project": "x"})
    assert missing.status_code == 422
    assert "command" in missing.json()["error"]
    not_json = await rest.post("/v1/runs", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert (await rest.get("/v1/runs/not-a-run")).status_code == 404
    unknown = "01a1ff6f-0f34-7a07-90d1-1a37af2413eb"
    response = await rest.get(f"/v1/runs/{unknown}")
    assert response.status_code == 404
    assert unknown in response.json()["error"]
    assert (await rest.get(f"/v1/runs/{unknown}/logs")).status_code == 404
    assert (await rest.get("/v1/runs", params={"state": "sleeping"})).status_code == 422

    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await client.submit("")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "command must not be empty" in (invalid.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await client.get(unknown)
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as follow_missing:
        await client.follow(unknown)
    assert follow_missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_environment_is_injected_and_launcher_settings_do_not_leak(client: Grpc) -> None:
    run = await client.submit(
        py("import os; print(os.environ['GREETING'], os.environ['AME_TASK_NAME'], 'AME_POSTGRES_DSN' in os.environ)"),
        task="envtask",
        environment=[run_pb2.EnvVar(key="GREETING", value="bonjour")],
    )
    followed = await client.follow(run.id)
    assert followed.texts == ["bonjour envtask False"]


async def test_cancel_stops_a_running_run(client: Grpc, stack: Stack) -> None:
    run = await client.submit(py("import time; print('started', flush=True); time.sleep(60)"))
    call = client.stub.FollowLogs(ame_service_pb2.FollowLogsRequest(run_id=run.id))
    events = call.__aiter__()
    first = await asyncio.wait_for(events.__anext__(), timeout=20)
    assert first.line.text == "started"
    response = await client.stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=run.id, reason="enough"))
    assert response.run.id == run.id
    rest = [event async for event in events]
    assert [e.HasField("end") for e in rest] == [True]
    assert rest[0].end.state == run_pb2.RUN_STATE_CANCELLED
    assert rest[0].end.reason == "enough"
    await wait_until(lambda: _state(client, run.id, run_pb2.RUN_STATE_CANCELLED), message="cancelled")
    # The launcher finishes the lease after publishing the end, concurrently with the registry applying it.
    await wait_until(
        lambda: all(launcher.active_runs == 0 for launcher in stack.launchers), message="the launchers to let go"
    )


async def test_timeout_ends_the_run_as_timed_out(client: Grpc) -> None:
    run = await client.submit(py("import time; time.sleep(60)"), timeout_seconds=0.5)
    followed = await asyncio.wait_for(client.follow(run.id), timeout=20)
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_TIMED_OUT
    await wait_until(lambda: _state(client, run.id, run_pb2.RUN_STATE_TIMED_OUT), message="timed out")


async def test_burst_every_run_finishes_once_across_two_launchers(client: Grpc, stack: Stack) -> None:
    n = 40
    runs = await asyncio.gather(*(client.submit(py(f"print('run {i}')"), task=f"burst-{i}") for i in range(n)))
    follows = await asyncio.gather(*(client.follow(r.id) for r in runs))
    for i, followed in enumerate(follows):
        assert followed.texts == [f"run {i}"]
        assert followed.end is not None
        assert followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED

    async def all_recorded() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            states = await conn.fetch("SELECT state, count(*) AS n FROM runs GROUP BY state")
        return {r["state"]: r["n"] for r in states} == {"succeeded": n}

    await wait_until(all_recorded, timeout=30, message="all runs succeeded in the registry")
    async with stack.runtime.pool.acquire() as conn:
        leases = await conn.fetch("SELECT run_id, count(*) AS n FROM leases GROUP BY run_id")
        holders = await conn.fetchval("SELECT count(DISTINCT launcher_id) FROM leases")
    assert len(leases) == n
    assert all(r["n"] == 1 for r in leases)
    assert holders >= 1


async def test_openapi_page_describes_the_runs_api(rest: httpx.AsyncClient) -> None:
    spec = (await rest.get("/openapi.json")).json()
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/cancel", "/v1/runs/{run_id}/logs"} <= set(spec["paths"])
    assert "RunSpec" in spec["components"]["schemas"]
    docs = await rest.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
