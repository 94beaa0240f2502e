"""While PostgreSQL is away the api says so: 503 with Retry-After (REST) and UNAVAILABLE (gRPC), never a 500.

The outage is real: the api runs against a PostgreSQL server of this test's own, which is stopped (fast
shutdown, so open connections are cut) and started again on the same port.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from pathlib import Path

import grpc
import httpx
import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import bearer, discover_token
from ame_platform.embedded import EmbeddedPostgres
from tests.integration.clients import Grpc
from tests.stack_fixtures import running_api
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

_RETRY_AFTER = "2"  # ApiSettings.retry_after's default


def _local_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("socket").getsockname()[1])


async def _refused_over_grpc(client: Grpc, run_id: str) -> list[tuple[grpc.StatusCode, str]]:
    stub = client.stub
    calls: list[Awaitable[object]] = [
        stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), idempotency_key="g")),
        stub.GetRun(ame_service_pb2.GetRunRequest(run_id=run_id)),
        stub.ListRuns(ame_service_pb2.ListRunsRequest()),
        stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=run_id)),
    ]
    found = []
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        trailers = dict(failed.value.trailing_metadata() or ())
        found.append((failed.value.code(), str(trailers.get("retry-after"))))
    with pytest.raises(grpc.aio.AioRpcError) as follow:
        async for _ in stub.FollowLogs(ame_service_pb2.FollowLogsRequest(run_id=run_id)):
            pass
    found.append((follow.value.code(), str(dict(follow.value.trailing_metadata() or ()).get("retry-after"))))
    return found


async def test_the_api_answers_503_with_retry_after_while_the_database_is_away(
    nats_url: str, bus_prefix: str, infra_dir: Path
) -> None:
    server = EmbeddedPostgres(infra_dir / f"outage-{uuid.uuid4().hex[:8]}", fast_unsafe=True)
    async with server:
        dsn = await server.create_database("ame")
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with (
            running_api(nats_url, dsn, bus_prefix) as api,
            httpx.AsyncClient(
                base_url=api.rest_url, limits=limits, timeout=10, headers=bearer(discover_token())
            ) as rest,
        ):
            client = Grpc(api.grpc_target)
            try:
                first = await rest.post("/v1/runs", json={"command": "true"}, headers={"Idempotency-Key": "before"})
                assert first.status_code == 201, first.text
                run_id = first.json()["id"]

                await server.stop()
                try:
                    refused = [
                        await rest.post("/v1/runs", json={"command": "true"}, headers={"Idempotency-Key": "during"}),
                        await rest.get("/v1/runs"),
                        await rest.get(f"/v1/runs/{run_id}"),
                        await rest.post(f"/v1/runs/{run_id}/cancel", json={"reason": "outage"}),
                        await rest.get(f"/v1/runs/{run_id}/logs"),
                    ]
                    over_grpc = await _refused_over_grpc(client, run_id)
                finally:
                    await server.start()

                assert [r.status_code for r in refused] == [503] * 5, [r.text for r in refused]
                for response in refused:
                    assert response.headers["retry-after"] == _RETRY_AFTER
                    assert response.json()["request_id"] == response.headers["x-request-id"]
                    assert "Traceback" not in response.text
                assert over_grpc == [(grpc.StatusCode.UNAVAILABLE, _RETRY_AFTER)] * 5

                async def submitted() -> httpx.Response | None:  # None: not yet
                    response = await rest.post(
                        "/v1/runs", json={"command": "true"}, headers={"Idempotency-Key": "during"}
                    )
                    assert response.status_code in (201, 503), response.text
                    return response if response.status_code == 201 else None

                # The refused submission, retried with its idempotency key, is accepted once the database is back.
                accepted: httpx.Response = await wait_until(submitted, timeout=30, message="the database to be back")
                again = await rest.post("/v1/runs", json={"command": "true"}, headers={"Idempotency-Key": "during"})
                assert again.json()["id"] == accepted.json()["id"]
                assert (await rest.get(f"/v1/runs/{run_id}")).json()["state"] == "queued"
                # Every answer, 503s included, came over the one keep-alive connection.
                assert {_local_port(r) for r in [first, *refused, accepted, again]} == {_local_port(first)}
            finally:
                await client.close()
