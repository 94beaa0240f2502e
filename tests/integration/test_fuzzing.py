"""Fuzzing the front doors: no generated request may get a 5xx (REST) or INTERNAL/UNKNOWN (gRPC).

REST: schemathesis generates valid and invalid requests from the api's own OpenAPI document. gRPC:
hypothesis builds every request message with values anywhere in the wire's ranges (any text protobuf can
carry, NUL included), sometimes with unknown fields appended, and sometimes as plain random bytes.

Both run against an api without launchers, so no generated command is ever executed. The fuzzers are
synchronous (requests, a blocking gRPC channel), so they run in a worker thread while the servers run on
the test's event loop. Example counts are kept small enough for a 2-core CI machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import authenticated_channel, bearer, discover_token
from tests.stack_fixtures import ApiStack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

_REST_EXAMPLES = 250
_GRPC_EXAMPLES = 400


def _fuzz(max_examples: int) -> settings:
    # No shrinking: the failure message already names the request, and shrinking HTTP calls takes minutes.
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )


# REST -----------------------------------------------------------------------------------------------------


def _fuzz_rest(base_url: str, openapi: dict[str, Any], token: str | None, foreign: list[str]) -> int:
    """Fuzz the REST api; no response may be a 5xx or name any of `foreign` (another organisation's objects)."""
    schema = schemathesis.openapi.from_dict(openapi)
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE),
        schema.as_strategy(GenerationMode.NEGATIVE),
    )
    session = requests.Session()  # one keep-alive connection for all of them, as a real client would
    session.headers.update(bearer(token))  # with a token, requests get past authentication into the handlers
    sent = 0

    @_fuzz(_REST_EXAMPLES)
    @given(case=cases)
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        try:
            response = case.call(base_url=base_url, session=session, timeout=15)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
            reject()  # a request no HTTP client can send
        sent += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path!a} query={case.query!a} body={case.body!a:.300} -> "
            f"{response.status_code} {response.text[:300]!a}"
        )
        leaked = [marker for marker in foreign if marker in response.text]
        assert not leaked, f"{case.method} {case.formatted_path!a} -> {response.status_code} shows {leaked}"

    check()
    session.close()
    return sent


async def _another_organisation(rest_url: str) -> list[str]:
    """Organisation `fuzzother` with a run, a pushed project and a secret, made through the API; returns what
    names them (none of which a token of the server's own organisation may ever see)."""
    admin = bearer(discover_token())
    async with httpx.AsyncClient(base_url=rest_url, timeout=30) as client:
        created = await client.post("/v1/organisations", json={"name": "fuzzother"}, headers=admin)
        assert created.status_code == 201, created.text
        issued = await client.post(
            "/v1/tokens", json={"organisation": "fuzzother", "scope": "run", "name": "fuzz"}, headers=admin
        )
        assert issued.status_code == 201, issued.text
        other = bearer(issued.json()["token"])
        run = await client.post(
            "/v1/runs", json={"project": "fuzzotherproj", "task": "t", "command": "true"}, headers=other
        )
        assert run.status_code == 201, run.text
        secret = await client.put("/v1/secrets/FUZZOTHER_SECRET", json={"value": "fuzz-other-value"}, headers=other)
        assert secret.status_code == 201, secret.text
        return [run.json()["id"], "fuzzotherproj", "FUZZOTHER_SECRET", "fuzz-other-value", issued.json()["id"]]


async def _organisation_admin_token(rest_url: str) -> str:
    """An `admin` token of the server's own organisation: every route it may use, and no other organisation."""
    async with httpx.AsyncClient(base_url=rest_url, timeout=30) as client:
        issued = await client.post(
            "/v1/tokens", json={"scope": "admin", "name": "fuzz admin"}, headers=bearer(discover_token())
        )
        assert issued.status_code == 201, issued.text
        return str(issued.json()["token"])


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
async def test_schemathesis_finds_no_5xx_in_the_rest_api(api_stack: ApiStack, with_token: bool) -> None:
    async with httpx.AsyncClient(base_url=api_stack.rest_url) as client:
        openapi = (await client.get("/openapi.json")).json()
    foreign = await _another_organisation(api_stack.rest_url)
    token = await _organisation_admin_token(api_stack.rest_url) if with_token else None
    sent = await asyncio.to_thread(_fuzz_rest, api_stack.rest_url, openapi, token, foreign)
    assert sent >= _REST_EXAMPLES // 2


# gRPC -----------------------------------------------------------------------------------------------------

_SERVICE = "/ame.contracts.api.v1.AmeService"
_ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
}

_text = st.text(max_size=40)  # any code point protobuf can carry (hypothesis leaves out lone surrogates)
_int64 = st.integers(-(2**63), 2**63 - 1)
_int32 = st.integers(-(2**31), 2**31 - 1)
_enum = st.integers(0, 8) | _int32
_run_ids = st.uuids().map(str) | _text

_specs = st.builds(
    run_pb2.RunSpec,
    project=_text,
    task=_text,
    command=st.text(max_size=200),
    executor=st.builds(
        run_pb2.Executor,
        kind=st.sampled_from(["pip", "poetry", "pipenv", "mlflow", "custom"]) | _text,
        python_version=_text,
        image=_text,
    ),
    environment=st.lists(st.builds(run_pb2.EnvVar, key=_text, value=_text), max_size=3),
    secrets=st.lists(st.builds(run_pb2.SecretRef, key=_text, inject_as=_text, vault=_text), max_size=3),
    resources=st.builds(run_pb2.Resources, cpu_millis=_int64, memory_bytes=_int64, storage_bytes=_int64, gpus=_int32),
    timeout_seconds=st.floats(),
    retries=_int32,
    artifacts=st.builds(run_pb2.Artifacts, paths=st.lists(_text, max_size=3), save_changed_files=st.booleans()),
    project_version_id=_text,
    labels=st.dictionaries(_text, _text, max_size=3),
)

_messages: dict[str, st.SearchStrategy[Any]] = {
    "SubmitRun": st.builds(
        ame_service_pb2.SubmitRunRequest,
        spec=_specs,
        idempotency_key=_text,
        trigger=_enum,
        parent_run_id=_run_ids,
    ),
    "GetRun": st.builds(ame_service_pb2.GetRunRequest, run_id=_run_ids),
    "ListRuns": st.builds(
        ame_service_pb2.ListRunsRequest,
        project=_text,
        task=_text,
        states=st.lists(_enum, max_size=3),
        page_size=_int32,
        page_token=_run_ids,
    ),
    "CancelRun": st.builds(ame_service_pb2.CancelRunRequest, run_id=_run_ids, reason=st.text(max_size=3000)),
    "FollowLogs": st.builds(ame_service_pb2.FollowLogsRequest, run_id=_run_ids, from_seq=st.integers(0, 2**64 - 1)),
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# A field number no request message defines (they stop below 16), as a varint.
_unknown_tails = st.just(b"") | st.builds(
    lambda number, value: _varint(number << 3) + _varint(value),
    st.integers(16, 2**29 - 1),
    st.integers(0, 2**64 - 1),
)


@st.composite
def _calls(draw: st.DrawFn) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(_messages)))
    if draw(st.integers(0, 9)) == 0:
        return method, draw(st.binary(max_size=120))
    return method, draw(_messages[method]).SerializeToString() + draw(_unknown_tails)


def _fuzz_grpc(target: str) -> dict[str, int]:
    codes: dict[str, int] = {}
    with authenticated_channel(target, discover_token()) as channel:
        unary: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {
            m: channel.unary_unary(f"{_SERVICE}/{m}") for m in _messages if m != "FollowLogs"
        }
        follow: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(f"{_SERVICE}/FollowLogs")

        @_fuzz(_GRPC_EXAMPLES)
        @given(call=_calls())
        def check(call: tuple[str, bytes]) -> None:
            method, payload = call
            try:
                if method == "FollowLogs":
                    for _ in follow(payload, timeout=15):
                        pass
                else:
                    unary[method](payload, timeout=15)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                assert code in _ALLOWED, f"{method} {payload!r:.300} -> {code} {details!a}"
                assert details, f"{method} {code} without a message"
            codes[code.name] = codes.get(code.name, 0) + 1

        check()
    return codes


async def test_hypothesis_finds_no_internal_or_unknown_in_the_grpc_api(api_stack: ApiStack) -> None:
    codes = await asyncio.to_thread(_fuzz_grpc, api_stack.grpc_target)
    assert sum(codes.values()) >= _GRPC_EXAMPLES // 2
    # The fuzzer reached past validation as well as into it.
    assert codes.get("OK", 0) > 0
    assert codes.get("INVALID_ARGUMENT", 0) > 0
