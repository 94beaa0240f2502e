"""Every input is validated at the edge: what a fault probe of 300 hostile requests found, one test each.

The probe got 500s for numbers over the wire's range, NUL or lone surrogates in strings the database
cannot store (query parameters included), accepted unknown nested fields and stored a 900 KB cancel
reason. Each case here must now be a 4xx with a message (REST) or INVALID_ARGUMENT (gRPC); an unexpected
fault must be a 500 that names a request id and leaves the keep-alive connection usable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain.limits import INT32_MAX, INT64_MAX, MAX_REASON_CHARS
from ame.sdk.credentials import bearer, discover_token
from tests.integration.clients import Grpc
from tests.stack_fixtures import ApiStack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_SERVICE = "/ame.contracts.api.v1.AmeService"
_RUN_ID = "01a1ff6f-0f34-7a07-90d1-1a37af2413eb"


@pytest_asyncio.fixture(loop_scope="session")
async def rest(api_stack: ApiStack) -> AsyncIterator[httpx.AsyncClient]:
    """One keep-alive connection, so a test can see whether the server kept it."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=api_stack.rest_url, limits=limits, timeout=10, headers=bearer(discover_token())
    ) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def client(api_stack: ApiStack) -> AsyncIterator[Grpc]:
    c = Grpc(api_stack.grpc_target)
    yield c
    await c.close()


def _spec(**fields: Any) -> dict[str, Any]:
    return {"command": "true", **fields}


# REST -----------------------------------------------------------------------------------------------------

_HOSTILE_BODIES = {
    "cpu_millis over int64": _spec(resources={"cpu_millis": INT64_MAX + 1}),
    "memory_bytes over int64": _spec(resources={"memory_bytes": 2**64}),
    "storage_bytes over int64": _spec(resources={"storage_bytes": INT64_MAX + 1}),
    "gpus over int32": _spec(resources={"gpus": INT32_MAX + 1}),
    "NUL in executor.image": _spec(executor={"image": "python\u0000:3"}),
    "NUL in executor.python_version": _spec(executor={"python_version": "3.1\u00001"}),
    "NUL in artifacts.paths": _spec(artifacts={"paths": ["out/\u0000"]}),
    "NUL in secrets.key": _spec(secrets=[{"key": "db\u0000pw", "inject_as": "PW"}]),
    "NUL in secrets.vault": _spec(secrets=[{"key": "db", "inject_as": "PW", "vault": "v\u0000"}]),
    "NUL in project_version_id": _spec(project_version_id="v\u00001"),
    "NUL in a label key": _spec(labels={"k\u0000": "v"}),
    "unknown executor.kinds": _spec(executor={"kinds": "pip"}),
    "unknown resources.tpus": _spec(resources={"tpus": 4}),
    "unknown environment[0].secret": _spec(environment=[{"key": "A", "value": "1", "secret": True}]),
    "unknown artifacts.keep": _spec(artifacts={"paths": [], "keep": 3}),
    "artifact path over 4096": _spec(artifacts={"paths": ["p" * 5000]}),
    "image over 1024": _spec(executor={"image": "i" * 2000}),
}


@pytest.mark.parametrize("body", _HOSTILE_BODIES.values(), ids=_HOSTILE_BODIES.keys())
async def test_a_hostile_run_spec_is_a_422_with_a_message(rest: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await rest.post("/v1/runs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]
    assert "Traceback" not in response.text


async def test_lone_surrogates_are_a_422_in_every_string_even_a_dict_key(rest: httpx.AsyncClient) -> None:
    for raw in (
        b'{"command": "true", "artifacts": {"paths": ["\\udc80"]}}',
        b'{"command": "true", "executor": {"image": "\\ud800"}}',
        b'{"command": "true", "labels": {"\\ud800": "v"}}',
        b'{"command": "true", "resources": {"\\ud800": 1}}',
    ):
        response = await rest.post("/v1/runs", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/runs?project=a%00b",
        "/v1/runs?task=a%00b",
        "/v1/runs?project=%ED%A0%80",  # a lone surrogate, as UTF-8 would spell one
        "/v1/runs?task=%FF",
        "/v1/runs?page_token=%00",
        f"/v1/runs?page_size={2**70}",
        f"/v1/runs/{_RUN_ID}/logs?from_seq={2**64}",
        "/v1/runs/a%00b",
        "/v1/runs/" + "r" * 100,
        "/v1/runs/a%00b/logs",
    ],
)
async def test_path_and_query_parameters_are_validated(rest: httpx.AsyncClient, url: str) -> None:
    response = await rest.get(url)
    assert response.status_code == 422, response.text
    assert response.json()["error"]


async def test_an_empty_filter_means_any_over_rest_and_grpc(rest: httpx.AsyncClient, client: Grpc) -> None:
    created = await rest.post("/v1/runs", json={"project": "p1", "command": "true"})
    assert created.status_code == 201
    listed = await rest.get("/v1/runs?project=&task=")
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()["runs"]] == [created.json()["id"]]
    over_grpc = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="", task=""))
    assert [r.id for r in over_grpc.runs] == [created.json()["id"]]
    assert (await rest.get("/v1/runs?project=p2")).json()["runs"] == []


async def test_a_cancel_reason_is_capped_and_its_body_strict(rest: httpx.AsyncClient) -> None:
    run = await rest.post("/v1/runs", json={"command": "sleep 1"})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    for body in ({"reason": "x" * 900_000}, {"reason": "x" * (MAX_REASON_CHARS + 1)}, {"reason": "bad\u0000reason"}):
        refused = await rest.post(f"/v1/runs/{run_id}/cancel", json=body)
        assert refused.status_code == 422, refused.text[:200]
    unknown = await rest.post(f"/v1/runs/{run_id}/cancel", json={"reason": "ok", "force": True})
    assert unknown.status_code == 422
    assert "force" in unknown.json()["error"]
    assert (await rest.get(f"/v1/runs/{run_id}")).json()["state"] == "queued"
    accepted = await rest.post(f"/v1/runs/{run_id}/cancel", json={"reason": "y" * MAX_REASON_CHARS})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "cancelled"
    assert accepted.json()["reason"] == "y" * MAX_REASON_CHARS


def _local_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("socket").getsockname()[1])


async def test_a_500_names_a_request_id_and_keeps_the_connection(
    rest: httpx.AsyncClient, api_stack: ApiStack, caplog: pytest.LogCaptureFixture
) -> None:
    before = await rest.get("/v1/runs")
    assert before.status_code == 200
    assert before.headers["x-request-id"]
    # A real fault under the api, and not one a retry fixes: its table is gone.
    async with api_stack.runtime.pool.acquire() as conn:
        await conn.execute("ALTER TABLE runs RENAME TO runs_gone")
    try:
        with caplog.at_level(logging.ERROR):
            failed = await rest.get(f"/v1/runs/{_RUN_ID}")
    finally:
        async with api_stack.runtime.pool.acquire() as conn:
            await conn.execute("ALTER TABLE runs_gone RENAME TO runs")
    assert failed.status_code == 500
    request_id = failed.headers["x-request-id"]
    assert failed.json()["request_id"] == request_id
    assert request_id in failed.json()["error"]
    assert "Traceback" not in failed.text
    assert "runs_gone" not in failed.text
    assert failed.headers.get("connection", "").lower() != "close"
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert logged[0].exc_info is not None
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]

    after = await rest.get(f"/v1/runs/{_RUN_ID}")
    assert after.status_code == 404, after.text
    assert _local_port(after) == _local_port(failed) == _local_port(before)


async def test_a_client_request_id_is_echoed_and_a_strange_one_replaced(rest: httpx.AsyncClient) -> None:
    mine = await rest.get("/v1/runs", headers={"X-Request-Id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    odd = await rest.get("/v1/runs", headers={"X-Request-Id": "a b;c"})
    assert odd.headers["x-request-id"] != "a b;c"
    assert len(odd.headers["x-request-id"]) == 32


# gRPC -----------------------------------------------------------------------------------------------------


async def _raw(client: Grpc, method: str, payload: bytes) -> grpc.StatusCode:
    """The status of a call with `payload` as the request's bytes; a refusal must say why."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = client.channel.unary_unary(f"{_SERVICE}/{method}")
    try:
        await call(payload, timeout=10)
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details()
    else:
        return grpc.StatusCode.OK
    assert details, code
    return code


def _with_unknown_field(message: bytes, number: int) -> bytes:
    return message + bytes([(number << 3) | 0, 1])  # a varint field with value 1


def _nested(field: int, payload: bytes) -> bytes:
    return bytes([(field << 3) | 2, len(payload)]) + payload


_HOSTILE_SPECS = {
    "NUL in executor.image": run_pb2.RunSpec(command="true", executor=run_pb2.Executor(image="a\u0000")),
    "NUL in executor.python_version": run_pb2.RunSpec(
        command="true", executor=run_pb2.Executor(python_version="3\u0000")
    ),
    "NUL in artifacts.paths": run_pb2.RunSpec(command="true", artifacts=run_pb2.Artifacts(paths=["a\u0000"])),
    "NUL in secrets.key": run_pb2.RunSpec(command="true", secrets=[run_pb2.SecretRef(key="k\u0000", inject_as="K")]),
    "NUL in project_version_id": run_pb2.RunSpec(command="true", project_version_id="\u0000"),
    "NUL in a label": run_pb2.RunSpec(command="true", labels={"k": "v\u0000"}),
    "negative cpu": run_pb2.RunSpec(command="true", resources=run_pb2.Resources(cpu_millis=-1)),
    "negative gpus": run_pb2.RunSpec(command="true", resources=run_pb2.Resources(gpus=-1)),
    "infinite timeout": run_pb2.RunSpec(command="true", timeout_seconds=float("inf")),
    "NaN timeout": run_pb2.RunSpec(command="true", timeout_seconds=float("nan")),
}


@pytest.mark.parametrize("spec", _HOSTILE_SPECS.values(), ids=_HOSTILE_SPECS.keys())
async def test_a_hostile_grpc_spec_is_invalid_argument(client: Grpc, spec: run_pb2.RunSpec) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=spec))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details()


async def test_grpc_refuses_unknown_fields_at_every_depth(client: Grpc) -> None:
    resources = _with_unknown_field(run_pb2.Resources(cpu_millis=100).SerializeToString(), 15)
    spec = run_pb2.RunSpec(command="true").SerializeToString() + _nested(7, resources)
    request = _nested(1, spec)
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = client.channel.unary_unary(f"{_SERVICE}/SubmitRun")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(request, timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.resources" in (failed.value.details() or "")
    assert "15" in (failed.value.details() or "")

    env = _with_unknown_field(run_pb2.EnvVar(key="A", value="1").SerializeToString(), 9)
    spec = run_pb2.RunSpec(command="true").SerializeToString() + _nested(5, env)
    assert await _raw(client, "SubmitRun", _nested(1, spec)) == grpc.StatusCode.INVALID_ARGUMENT
    top = _with_unknown_field(ame_service_pb2.GetRunRequest(run_id=_RUN_ID).SerializeToString(), 20)
    assert await _raw(client, "GetRun", top) == grpc.StatusCode.INVALID_ARGUMENT
    # The same request without the unknown field is served.
    assert await _raw(client, "GetRun", ame_service_pb2.GetRunRequest(run_id=_RUN_ID).SerializeToString()) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_undecodable_grpc_requests_are_invalid_argument_not_unknown(client: Grpc) -> None:
    bad_utf8 = b"\x0a\x02\xff\xfe"  # run_id = two bytes that are not UTF-8
    truncated = b"\x0a\x10abc"
    for method in ("GetRun", "ListRuns", "CancelRun", "SubmitRun"):
        assert await _raw(client, method, bad_utf8) == grpc.StatusCode.INVALID_ARGUMENT
        assert await _raw(client, method, truncated) == grpc.StatusCode.INVALID_ARGUMENT
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = client.channel.unary_stream(f"{_SERVICE}/FollowLogs")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in stream(bad_utf8, timeout=10):
            pass
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_requests_follow_the_rest_limits(client: Grpc) -> None:
    stub = client.stub
    calls: list[Awaitable[object]] = [
        stub.ListRuns(ame_service_pb2.ListRunsRequest(project="a\u0000b")),
        stub.ListRuns(ame_service_pb2.ListRunsRequest(task="a\u0000b")),
        stub.ListRuns(ame_service_pb2.ListRunsRequest(page_token="\u0000")),
        stub.ListRuns(ame_service_pb2.ListRunsRequest(states=[99])),  # type: ignore[list-item]
        stub.ListRuns(ame_service_pb2.ListRunsRequest(page_size=-1)),
        stub.GetRun(ame_service_pb2.GetRunRequest(run_id="a\u0000b")),
        stub.GetRun(ame_service_pb2.GetRunRequest(run_id="")),
        stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=_RUN_ID, reason="x" * 900_000)),
        stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=_RUN_ID, reason="bad\u0000reason")),
        stub.SubmitRun(
            ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), idempotency_key="k\u0000")
        ),
        stub.SubmitRun(
            ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), idempotency_key="k" * 201)
        ),
        stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), trigger=99)),
        stub.SubmitRun(
            ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command="true"), parent_run_id="p" * 100_000)
        ),
        # Hundreds of problems make a long message; it must still fit the status trailer.
        stub.SubmitRun(
            ame_service_pb2.SubmitRunRequest(
                spec=run_pb2.RunSpec(command="true", environment=[run_pb2.EnvVar(key="1") for _ in range(500)])
            )
        ),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
        assert failed.value.details()
    follow = stub.FollowLogs(ame_service_pb2.FollowLogsRequest(run_id=_RUN_ID, from_seq=2**64 - 1))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in follow:
            pass
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_internal_error_names_a_request_id_and_the_channel_goes_on(
    client: Grpc, api_stack: ApiStack, caplog: pytest.LogCaptureFixture
) -> None:
    async with api_stack.runtime.pool.acquire() as conn:
        await conn.execute("ALTER TABLE runs RENAME TO runs_gone")
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.get(str(uuid.uuid4()))
    finally:
        async with api_stack.runtime.pool.acquire() as conn:
            await conn.execute("ALTER TABLE runs_gone RENAME TO runs")
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    trailers = dict(failed.value.trailing_metadata() or ())
    request_id = str(trailers["x-request-id"])
    assert request_id in (failed.value.details() or "")
    assert "runs_gone" not in (failed.value.details() or "")
    assert len([r for r in caplog.records if request_id in r.getMessage()]) == 1
    listed = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest())
    assert list(listed.runs) == []
