"""Isolation: every REST route and every gRPC method, enumerated from the running app's OpenAPI document and
from the gRPC service descriptor, so a new endpoint cannot be forgotten:

- it must have a row in the scope table (ame_api.scopes) and a case here, or these tests fail;
- without a token it is refused (401 / UNAUTHENTICATED), except the public ones;
- with a token one scope below what it needs it is refused (403 / PERMISSION_DENIED);
- with organisation B's token on organisation A's objects it answers 404 / NOT_FOUND, or (listings, uploads)
  an answer that holds nothing of A's.

Expired and revoked tokens are refused at the next request.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.project.v1 import project_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import aio_channel, bearer
from ame_api import scopes
from tests.integration.isolation_world import (
    AME_YML,
    DATA,
    PROJECT,
    SECRET_NAME,
    SECRET_VALUE,
    SOURCE_URL,
    World,
    build_world,
    create_token,
    manifest,
    orchestration_zip,
    sha,
)
from tests.stack_fixtures import ApiStack, Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_SERVICE = ame_service_pb2.DESCRIPTOR.services_by_name["AmeService"]
# The token one scope below what an endpoint needs (`read` endpoints have none below them).
_BELOW = {"run": "read", "admin": "run", "server-admin": "admin"}


@pytest_asyncio.fixture(loop_scope="session")
async def world(stack: Stack) -> World:
    return await build_world(stack.rest_url, stack.grpc_target)


# REST ------------------------------------------------------------------------------------------------------

NOT_FOUND = 404


def _no_leak(world: World, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert world.leaks(response.text) == [], response.text


def _b_missing_blobs(world: World, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert sha(DATA) in response.json()["missing"], "B must not see that A holds the blob"


def _b_upload(world: World, response: httpx.Response) -> None:
    assert response.status_code == 201, "B's upload of bytes A holds must create B's own blob: " + response.text


def _b_own_secret(world: World, response: httpx.Response) -> None:
    # B's secret of the same name is B's own; A's is untouched (checked at the end).
    assert response.status_code in (200, 201, 204, 404), response.text
    assert world.leaks(response.text) == [], response.text


def _b_secrets(world: World, response: httpx.Response) -> None:
    _no_leak(world, response)
    assert all(s["created_at"] != world.secret_created_at for s in response.json()["secrets"]), response.text


def _b_whoami(world: World, response: httpx.Response) -> None:
    assert response.status_code == 200 and response.json()["organisation"] == "orgb", response.text


def _b_sources(world: World, response: httpx.Response) -> None:
    _no_leak(world, response)
    assert all(s["url"] != SOURCE_URL for s in response.json()["sources"]), response.text


def _b_own_source(world: World, response: httpx.Response) -> None:
    # B's own source (created once; the same request again is B's duplicate, never A's).
    assert response.status_code in (201, 409), response.text
    assert world.leaks(response.text) == [], response.text


# (method, path template) -> (body, what B gets: a status code, or a check of the response)
RestCase = tuple[dict[str, Any] | bytes | None, int | Callable[[World, httpx.Response], None]]


def rest_cases(world: World) -> dict[tuple[str, str], RestCase]:
    submit_a_version = {"project": PROJECT, "task": "hello", "command": "true", "project_version_id": world.version_id}
    return {
        ("POST", "/v1/runs"): (submit_a_version, 422),  # A's version is not B's to run
        ("GET", "/v1/runs"): (None, _no_leak),
        ("GET", "/v1/runs/{run_id}"): (None, NOT_FOUND),
        ("POST", "/v1/runs/{run_id}/cancel"): ({"reason": "B tries"}, NOT_FOUND),
        ("GET", "/v1/runs/{run_id}/logs"): (None, NOT_FOUND),
        ("POST", "/v1/runs/{run_id}/log-token"): (None, NOT_FOUND),
        ("GET", "/v1/tasks"): (None, _no_leak),
        ("POST", "/v1/projects/{project}/missing-blobs"): (manifest(), _b_missing_blobs),
        ("PUT", "/v1/projects/{project}/blobs/{sha256}"): (DATA, _b_upload),
        ("GET", "/v1/projects/{project}/blobs/{sha256}"): (None, NOT_FOUND),
        ("POST", "/v1/projects/{project}/versions"): (manifest(), 409),  # B holds no ame.yml blob
        ("GET", "/v1/projects/{project}/versions"): (None, NOT_FOUND),
        ("GET", "/v1/projects/{project}/versions/{version_id}"): (None, NOT_FOUND),
        ("GET", "/v1/whoami"): (None, _b_whoami),
        ("GET", "/v1/tokens"): (None, _no_leak),
        ("POST", "/v1/tokens"): ({"organisation": "default", "scope": "read"}, NOT_FOUND),
        ("POST", "/v1/tokens/{token_id}/revoke"): (None, NOT_FOUND),
        ("GET", "/v1/organisations"): (None, 403),
        ("POST", "/v1/organisations"): ({"name": "orgc"}, 403),
        ("GET", "/v1/admin/deadletters"): (None, 403),
        ("POST", "/v1/admin/deadletters/{letter_id}/replay"): (None, 403),
        ("PUT", "/v1/orgs/{org}/limits"): ({"max_runs": 1}, 403),
        ("GET", "/v1/orgs/{org}/limits"): (None, 403),
        ("PUT", "/v1/secrets/{name}"): ({"value": "b-value"}, _b_own_secret),
        ("GET", "/v1/secrets"): (None, _b_secrets),
        ("DELETE", "/v1/secrets/{name}"): (None, _b_own_secret),
        ("GET", "/v1/runs/{run_id}/artifacts"): (None, NOT_FOUND),
        ("GET", "/v1/runs/{run_id}/artifacts/{path}"): (None, NOT_FOUND),
        # A's hook: a token is no credential there (B's no more than none); an unsigned delivery is refused.
        ("POST", "/v1/hooks/{org}/{project}/{task}"): (b"{}", 401),
        ("GET", "/v1/hooks"): (None, _no_leak),
        ("POST", "/v1/projects/{project}/versions/{version_id}/activate"): (None, NOT_FOUND),
        ("GET", "/v1/schedules"): (None, _no_leak),
        # `{name}` is filled with A's secret's name: B has no schedule of that name, whatever A has.
        ("POST", "/v1/schedules/{name}/pause"): (None, NOT_FOUND),
        ("POST", "/v1/schedules/{name}/resume"): (None, NOT_FOUND),
        ("POST", "/v1/schedules/{name}/trigger"): (None, NOT_FOUND),
        ("GET", "/v1/loops"): (None, _no_leak),
        # Git project sources: B sees none of A's, cannot sync or remove A's, and A's push hook refuses B.
        ("GET", "/v1/projectsrc"): (None, _b_sources),
        ("POST", "/v1/projectsrc"): ({"url": "https://git.invalid/b/repo.git", "branch": "main"}, _b_own_source),
        ("DELETE", "/v1/projectsrc/{source_id}"): (None, NOT_FOUND),
        ("POST", "/v1/projectsrc/{source_id}/sync"): (None, NOT_FOUND),
        ("POST", "/v1/source-hooks/{org}/{source_id}"): (b"{}", 401),
        # A's project version is not B's to train from; B's list holds none of A's models.
        ("POST", "/v1/models/{model}/train"): ({"project": PROJECT, "project_version_id": world.version_id}, NOT_FOUND),
        ("GET", "/v1/models"): (None, _no_leak),
        ("GET", "/v1/datasets"): (None, _no_leak),
        # B has no project of A's name, so no data set of it to produce.
        ("POST", "/v1/datasets/{project}/{name}/refresh"): (None, NOT_FOUND),
        ("POST", "/v1/datasets/{project}/{name}/prepare"): ({"produce": True}, NOT_FOUND),
        # `{version_id}` and `{sha256}` are A's: B holds no such data set version.
        ("GET", "/v1/datasets/{project}/{name}/versions/{version_id}/blobs/{sha256}"): (None, NOT_FOUND),
    }


async def _routes(rest_url: str) -> list[tuple[str, str]]:
    """Every operation of the running app, from its OpenAPI document (generated from the app's routes)."""
    async with httpx.AsyncClient(base_url=rest_url) as client:
        document = (await client.get("/openapi.json")).json()
    return [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]


def _fill(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)


async def _send(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | bytes | None, token: str | None
) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": bearer(token)}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    return await client.request(method, path, **kwargs)


async def test_every_rest_route_and_grpc_method_is_in_the_scope_table(api_stack: ApiStack) -> None:
    routes = await _routes(api_stack.rest_url)
    assert len(routes) >= 20, routes
    undeclared = [r for r in routes if scopes.rest_need(*r) is None]
    assert undeclared == [], f"routes without a row in ame_api.scopes.REST: {undeclared}"
    methods = [f"/{_SERVICE.full_name}/{m.name}" for m in _SERVICE.methods]
    assert [m for m in methods if scopes.grpc_need(m) is None] == []
    # Public: only health, the API description and gRPC health/reflection.
    public = sorted(p for (_, p), need in scopes.REST.items() if need == scopes.PUBLIC)
    assert public == ["/docs", "/docs/oauth2-redirect", "/healthz", "/openapi.json", "/redoc"]
    assert all(scopes.grpc_need(m) != scopes.PUBLIC for m in methods)


async def test_rest_routes_refuse_no_token_lower_scope_and_other_organisations(world: World) -> None:
    routes = await _routes(world.rest_url)
    cases = rest_cases(world)
    ids = world.ids()
    async with httpx.AsyncClient(base_url=world.rest_url, timeout=30) as client:
        for method, template in routes:
            need = scopes.rest_need(method, template)
            if need == scopes.PUBLIC:
                assert (await client.request(method, template)).status_code == 200, template
                continue
            assert (method, template) in cases, f"no isolation case for {method} {template}: add one here"
            body, for_b = cases[(method, template)]
            path = _fill(template, ids if method != "PUT" else {**ids, "sha256": sha(DATA)})
            where = f"{method} {template}"

            no_token = await _send(client, method, path, body, None)
            assert no_token.status_code == 401, f"{where} without a token: {no_token.status_code} {no_token.text}"
            bad_token = await _send(client, method, path, body, "ame_not-a-token-of-this-server-at-all")
            assert bad_token.status_code == 401, f"{where} with a bad token: {bad_token.status_code}"

            if str(need) in _BELOW:
                lower = await _send(client, method, path, body, world.a[_BELOW[str(need)]])
                assert lower.status_code == 403, f"{where} with a {_BELOW[str(need)]} token: {lower.status_code}"

            as_b = await _send(client, method, path, body, world.b_admin)
            if isinstance(for_b, int):
                assert as_b.status_code == for_b, f"{where} as organisation B: {as_b.status_code} {as_b.text}"
                leaked = world.leaks(as_b.text, sent=f"{path} {body!r}")
                assert leaked == [], f"{where} as B leaks {leaked}: {as_b.text}"
            else:
                for_b(world, as_b)

        # A's objects are untouched by everything B tried, and A still reaches them.
        a_read = bearer(world.a["read"])
        run = (await client.get(f"/v1/runs/{world.run_id}", headers=a_read)).json()
        assert run["started_by"] == f"token:{world.a_token_ids['run']}", run
        assert run["state"] != "cancelled" and "B tries" not in run["reason"], run
        assert (await client.get("/v1/whoami", headers=a_read)).json()["organisation"] == "default"
        hooks = (await client.get("/v1/hooks", headers=a_read)).json()["webhooks"]
        assert [(h["project"], h["task"], h["secret_name"]) for h in hooks] == [(PROJECT, "hello", SECRET_NAME)], hooks
        assert SECRET_VALUE not in str(hooks)
        sources = (await client.get("/v1/projectsrc", headers=a_read)).json()["sources"]
        assert [(s["id"], s["url"]) for s in sources] == [(world.source_id, SOURCE_URL)], sources
        listed = (await client.get("/v1/secrets", headers=a_read)).json()["secrets"]
        assert [(s["name"], s["created_at"]) for s in listed] == [(SECRET_NAME, world.secret_created_at)], listed


# gRPC ------------------------------------------------------------------------------------------------------


def _grpc_requests(world: World) -> dict[str, Any]:
    files = [
        project_pb2.ManifestEntry(path="ame.yml", mode=0o100644, sha256=sha(AME_YML), size=len(AME_YML)),
        project_pb2.ManifestEntry(path="hello.py", mode=0o100644, sha256=sha(DATA), size=len(DATA)),
    ]
    upload = [
        ame_service_pb2.UploadBlobRequest(
            header=ame_service_pb2.BlobHeader(project=PROJECT, sha256=sha(DATA), size=len(DATA))
        ),
        ame_service_pb2.UploadBlobRequest(chunk=DATA),
    ]
    spec = run_pb2.RunSpec(project=PROJECT, task="hello", command="true", project_version_id=world.version_id)
    return {
        "SubmitRun": ame_service_pb2.SubmitRunRequest(spec=spec),
        "GetRun": ame_service_pb2.GetRunRequest(run_id=world.run_id),
        "ListRuns": ame_service_pb2.ListRunsRequest(),
        "CancelRun": ame_service_pb2.CancelRunRequest(run_id=world.run_id, reason="B tries"),
        "FollowLogs": ame_service_pb2.FollowLogsRequest(run_id=world.run_id, batched=True),
        "FindMissingBlobs": ame_service_pb2.FindMissingBlobsRequest(project=PROJECT, files=files),
        "UploadBlob": upload,
        "CommitProjectVersion": ame_service_pb2.CommitProjectVersionRequest(project=PROJECT, files=files),
        "ListProjectVersions": ame_service_pb2.ListProjectVersionsRequest(project=PROJECT),
        "GetProjectVersion": ame_service_pb2.GetProjectVersionRequest(project=PROJECT, version_id=world.version_id),
        "DownloadBlob": ame_service_pb2.DownloadBlobRequest(project=PROJECT, sha256=sha(AME_YML)),
        "ListTasks": ame_service_pb2.ListTasksRequest(),
        "WhoAmI": ame_service_pb2.WhoAmIRequest(),
        "CreateToken": ame_service_pb2.CreateTokenRequest(organisation="default", scope="read"),
        "ListTokens": ame_service_pb2.ListTokensRequest(),
        "RevokeToken": ame_service_pb2.RevokeTokenRequest(token_id=world.a_token_ids["read"]),
        "CreateOrganisation": ame_service_pb2.CreateOrganisationRequest(name="orgc"),
        "ListOrganisations": ame_service_pb2.ListOrganisationsRequest(),
        "SetOrganisationLimits": ame_service_pb2.SetOrganisationLimitsRequest(
            organisation="default", limits=ame_service_pb2.OrganisationLimits(max_runs=1)
        ),
        "GetOrganisationLimits": ame_service_pb2.GetOrganisationLimitsRequest(organisation="default"),
        # Naming A's organisation: B's token acts in B's only.
        "PutSecret": ame_service_pb2.PutSecretRequest(name=SECRET_NAME, value="b-value", organisation="default"),
        "ListSecrets": ame_service_pb2.ListSecretsRequest(organisation="default"),
        "DeleteSecret": ame_service_pb2.DeleteSecretRequest(name=SECRET_NAME, organisation="default"),
        "ResolveRunSecrets": ame_service_pb2.ResolveRunSecretsRequest(
            run_id=world.run_id, attempt=1, organisation="default"
        ),
        "ListRunArtifacts": ame_service_pb2.ListRunArtifactsRequest(run_id=world.run_id),
        "DownloadArtifact": ame_service_pb2.DownloadArtifactRequest(run_id=world.run_id, path="model.txt"),
        "ListWebhooks": ame_service_pb2.ListWebhooksRequest(project=PROJECT),
        "ActivateProjectVersion": ame_service_pb2.ActivateProjectVersionRequest(
            project=PROJECT, version_id=world.version_id
        ),
        "ListSchedules": ame_service_pb2.ListSchedulesRequest(),
        "PauseSchedule": ame_service_pb2.ScheduleRequest(name="hello", project=PROJECT),
        "ResumeSchedule": ame_service_pb2.ScheduleRequest(name="hello", project=PROJECT),
        "TriggerSchedule": ame_service_pb2.ScheduleRequest(name="hello", project=PROJECT),
        "AddProjectSource": ame_service_pb2.AddProjectSourceRequest(
            url="https://git.invalid/b/repo.git", branch="main"
        ),
        "ListProjectSources": ame_service_pb2.ListProjectSourcesRequest(),
        "RemoveProjectSource": ame_service_pb2.ProjectSourceRequest(source=world.source_id),
        "SyncProjectSource": ame_service_pb2.ProjectSourceRequest(source=world.source_id, wait=True),
        "TrainModel": ame_service_pb2.TrainModelRequest(
            project=PROJECT, model="hello_model", project_version_id=world.version_id
        ),
        "ListModels": ame_service_pb2.ListModelsRequest(),
        "UploadOrchestration": [
            ame_service_pb2.UploadOrchestrationRequest(
                header=ame_service_pb2.UploadOrchestrationHeader(name="orch-of-b", file_name="b.zip")
            ),
            ame_service_pb2.UploadOrchestrationRequest(chunk=orchestration_zip()),
        ],
        "ListOrchestrations": ame_service_pb2.ListOrchestrationsRequest(),
        "GetOrchestration": ame_service_pb2.OrchestrationRequest(name=world.orchestration_id),
        "DeleteOrchestration": ame_service_pb2.OrchestrationRequest(name=world.orchestration_id),
        "StartOrchestrationTask": ame_service_pb2.StartOrchestrationTaskRequest(
            orchestration=world.orchestration_id, name="b tries", json_args="{}"
        ),
        "ListOrchestrationTasks": ame_service_pb2.ListOrchestrationTasksRequest(),
        "GetOrchestrationTask": ame_service_pb2.OrchestrationTaskRequest(task_id=world.orchestration_task_id),
        "KillOrchestrationTask": ame_service_pb2.KillOrchestrationTaskRequest(
            task_id=world.orchestration_task_id, cancel=True
        ),
        "ListOrchestrationTaskRuns": ame_service_pb2.ListOrchestrationTaskRunsRequest(
            task_id=world.orchestration_task_id
        ),
        "ListDataSets": ame_service_pb2.ListDataSetsRequest(project=PROJECT),
        "RefreshDataSet": ame_service_pb2.RefreshDataSetRequest(project=PROJECT, name="hello"),
        "GetDataSet": ame_service_pb2.GetDataSetRequest(project=PROJECT, name="hello", produce=True),
        "DownloadDataSetBlob": ame_service_pb2.DownloadDataSetBlobRequest(
            project=PROJECT, name="hello", version_id=world.version_id, sha256=sha(AME_YML)
        ),
    }


OK = grpc.StatusCode.OK
# What organisation B gets for each method, used on A's objects.
GRPC_FOR_B: dict[str, grpc.StatusCode] = {
    "SubmitRun": grpc.StatusCode.INVALID_ARGUMENT,  # A's version is not B's to run
    "GetRun": grpc.StatusCode.NOT_FOUND,
    "ListRuns": OK,
    "CancelRun": grpc.StatusCode.NOT_FOUND,
    "FollowLogs": grpc.StatusCode.NOT_FOUND,
    "FindMissingBlobs": OK,
    "UploadBlob": OK,
    "CommitProjectVersion": grpc.StatusCode.FAILED_PRECONDITION,  # B holds no ame.yml blob
    "ListProjectVersions": grpc.StatusCode.NOT_FOUND,
    "GetProjectVersion": grpc.StatusCode.NOT_FOUND,
    "DownloadBlob": grpc.StatusCode.NOT_FOUND,
    "ListTasks": OK,
    "WhoAmI": OK,
    "CreateToken": grpc.StatusCode.NOT_FOUND,
    "ListTokens": OK,
    "RevokeToken": grpc.StatusCode.NOT_FOUND,
    "CreateOrganisation": grpc.StatusCode.PERMISSION_DENIED,
    "ListOrganisations": grpc.StatusCode.PERMISSION_DENIED,
    "SetOrganisationLimits": grpc.StatusCode.PERMISSION_DENIED,
    "GetOrganisationLimits": grpc.StatusCode.PERMISSION_DENIED,
    "PutSecret": grpc.StatusCode.NOT_FOUND,
    "ListSecrets": grpc.StatusCode.NOT_FOUND,
    "DeleteSecret": grpc.StatusCode.NOT_FOUND,
    "ResolveRunSecrets": grpc.StatusCode.UNAUTHENTICATED,  # only the launcher credential resolves secrets
    "ListRunArtifacts": grpc.StatusCode.NOT_FOUND,
    "DownloadArtifact": grpc.StatusCode.NOT_FOUND,
    "ListWebhooks": OK,  # B's own hooks: none of A's
    "ActivateProjectVersion": grpc.StatusCode.NOT_FOUND,
    "ListSchedules": OK,
    "PauseSchedule": grpc.StatusCode.NOT_FOUND,
    "ResumeSchedule": grpc.StatusCode.NOT_FOUND,
    "TriggerSchedule": grpc.StatusCode.NOT_FOUND,
    "AddProjectSource": OK,  # B's own source
    "ListProjectSources": OK,  # B's own: none of A's
    "RemoveProjectSource": grpc.StatusCode.NOT_FOUND,
    "SyncProjectSource": grpc.StatusCode.NOT_FOUND,
    "TrainModel": grpc.StatusCode.NOT_FOUND,
    "ListModels": OK,
    "UploadOrchestration": OK,  # B's own orchestration, beside A's of another name
    "ListOrchestrations": OK,  # B's own: none of A's
    "GetOrchestration": grpc.StatusCode.NOT_FOUND,
    "DeleteOrchestration": grpc.StatusCode.NOT_FOUND,
    "StartOrchestrationTask": grpc.StatusCode.NOT_FOUND,
    "ListOrchestrationTasks": OK,
    "GetOrchestrationTask": grpc.StatusCode.NOT_FOUND,
    "KillOrchestrationTask": grpc.StatusCode.NOT_FOUND,
    "ListOrchestrationTaskRuns": grpc.StatusCode.NOT_FOUND,
    "ListDataSets": OK,  # B's own data sets: none of A's
    "RefreshDataSet": grpc.StatusCode.NOT_FOUND,
    "GetDataSet": grpc.StatusCode.NOT_FOUND,
    "DownloadDataSetBlob": grpc.StatusCode.NOT_FOUND,
}


async def _invoke(target: str, token: str | None, method: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    """Call `method` of AmeService with `token`; its status and the text of what came back."""
    path = f"/{_SERVICE.full_name}/{method.name}"
    response_type = getattr(ame_service_pb2, method.output_type.name)
    request_type = getattr(ame_service_pb2, method.input_type.name)
    channel = aio_channel(target, token)
    try:
        kwargs = {
            "request_serializer": request_type.SerializeToString,
            "response_deserializer": response_type.FromString,
        }
        if method.client_streaming:
            call: Any = channel.stream_unary(path, **kwargs)(_aiter(request), timeout=10)
            return OK, str(await call)
        if method.server_streaming:
            parts = [str(part) async for part in channel.unary_stream(path, **kwargs)(request, timeout=10)]
            return OK, "".join(parts)
        return OK, str(await channel.unary_unary(path, **kwargs)(request, timeout=10))
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    finally:
        await channel.close()


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def test_grpc_methods_refuse_no_token_lower_scope_and_other_organisations(world: World) -> None:
    requests = _grpc_requests(world)
    target = world.grpc_target
    for method in _SERVICE.methods:
        name = method.name
        assert name in requests and name in GRPC_FOR_B, f"no isolation case for gRPC {name}: add one here"
        need = scopes.grpc_need(f"/{_SERVICE.full_name}/{name}")
        code, text = await _invoke(target, None, method, requests[name])
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{name} without a token: {code} {text}"
        code, _ = await _invoke(target, "ame_not-a-token-of-this-server-at-all", method, requests[name])
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{name} with a bad token: {code}"
        if str(need) in _BELOW:
            code, text = await _invoke(target, world.a[_BELOW[str(need)]], method, requests[name])
            assert code == grpc.StatusCode.PERMISSION_DENIED, f"{name} with a {_BELOW[str(need)]} token: {code} {text}"
        code, text = await _invoke(target, world.b_admin, method, requests[name])
        assert code == GRPC_FOR_B[name], f"{name} as organisation B: {code} {text}"
        leaked = world.leaks(text, sent=str(requests[name]))
        assert leaked == [], f"{name} as B leaks {leaked}: {text}"
        if name == "FindMissingBlobs":
            assert sha(DATA) in text, "B must not see that A holds the blob"
        if name == "WhoAmI":
            assert "orgb" in text

    # Naming A's organisation explicitly is refused too.
    code, _ = await _invoke(
        target,
        world.b_admin,
        _SERVICE.methods_by_name["ListRuns"],
        ame_service_pb2.ListRunsRequest(organisation="default"),
    )
    assert code == grpc.StatusCode.NOT_FOUND
    # A's run is untouched and A still reaches it.
    code, text = await _invoke(
        target, world.a["read"], _SERVICE.methods_by_name["GetRun"], ame_service_pb2.GetRunRequest(run_id=world.run_id)
    )
    assert code == OK and "CANCELLED" not in text and world.a_token_ids["run"] in text, text


# Expired and revoked tokens ------------------------------------------------------------------------------------


async def test_a_revoked_token_is_refused_at_the_next_request(world: World) -> None:
    get_run = _SERVICE.methods_by_name["GetRun"]
    request = ame_service_pb2.GetRunRequest(run_id=world.run_id)
    async with httpx.AsyncClient(base_url=world.rest_url, timeout=30) as client:
        token, token_id = await create_token(client, world.a["admin"], scope="read")
        assert (await client.get(f"/v1/runs/{world.run_id}", headers=bearer(token))).status_code == 200
        assert (await _invoke(world.grpc_target, token, get_run, request))[0] == OK

        revoked = await client.post(f"/v1/tokens/{token_id}/revoke", headers=bearer(world.a["admin"]))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text

        refused = await client.get(f"/v1/runs/{world.run_id}", headers=bearer(token))
        assert refused.status_code == 401 and "revoked" in refused.json()["error"], refused.text
        assert (await _invoke(world.grpc_target, token, get_run, request))[0] == grpc.StatusCode.UNAUTHENTICATED
        listed = (await client.get("/v1/tokens", headers=bearer(world.a["admin"]))).json()["tokens"]
        assert [t["revoked_at"] is not None for t in listed if t["id"] == token_id] == [True]


async def test_an_expired_token_is_refused(world: World) -> None:
    get_run = _SERVICE.methods_by_name["GetRun"]
    request = ame_service_pb2.GetRunRequest(run_id=world.run_id)
    async with httpx.AsyncClient(base_url=world.rest_url, timeout=30) as client:
        token, _ = await create_token(client, world.a["admin"], scope="read", expires=1)
        first = await client.get(f"/v1/runs/{world.run_id}", headers=bearer(token))
        assert first.status_code == 200, first.text

        async def refused() -> bool:
            response = await client.get(f"/v1/runs/{world.run_id}", headers=bearer(token))
            return response.status_code == 401

        await wait_until(refused, timeout=10, interval=0.2, message="the token to expire")
        assert (await _invoke(world.grpc_target, token, get_run, request))[0] == grpc.StatusCode.UNAUTHENTICATED


async def test_token_creation_stays_within_the_creators_scope_and_organisation(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.rest_url, timeout=30) as client:
        admin = bearer(world.a["admin"])
        too_high = await client.post("/v1/tokens", json={"scope": "server-admin"}, headers=admin)
        assert too_high.status_code == 403, too_high.text
        created = await client.post("/v1/tokens", json={"scope": "admin", "name": "ci"}, headers=admin)
        assert created.status_code == 201 and created.json()["organisation"] == "default", created.text
        assert created.json()["token"].startswith("ame_")
        # The token is shown once: listings never hold it.
        listing = await client.get("/v1/tokens", headers=admin)
        assert created.json()["token"] not in listing.text and created.json()["id"] in listing.text
        # Organisations are the server-admin's.
        assert (await client.get("/v1/organisations", headers=admin)).status_code == 403
        orgs = await client.get("/v1/organisations", headers=bearer(world.server_admin))
        assert sorted(o["id"] for o in orgs.json()["organisations"]) == ["default", "orgb"]
        bad = await client.post("/v1/organisations", json={"name": "Bad Name!"}, headers=bearer(world.server_admin))
        assert bad.status_code == 422, bad.text


async def test_a_run_log_token_follows_that_runs_logs_and_nothing_else(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.rest_url, timeout=30) as client:
        issued = await client.post(f"/v1/runs/{world.run_id}/log-token", headers=bearer(world.a["read"]))
        assert issued.status_code == 201, issued.text
        token, url = issued.json()["token"], issued.json()["url"]
        assert url == f"/v1/runs/{world.run_id}/logs?token={token}"

        # What a browser's EventSource does: no header, the token in the URL; the run ends, so the stream does.
        followed = await client.get(url)
        assert followed.status_code == 200 and "event: end" in followed.text, followed.text

        # Nowhere else: not as a header on another route, not over gRPC, not for another run.
        assert (await client.get(f"/v1/runs/{world.run_id}", headers=bearer(token))).status_code == 403
        assert (await client.post(f"/v1/runs/{world.run_id}/log-token", headers=bearer(token))).status_code == 403
        other = await client.post(
            "/v1/runs", json={"command": "true", "project": "p", "task": "t"}, headers=bearer(world.a["run"])
        )
        assert (await client.get(f"/v1/runs/{other.json()['id']}/logs?token={token}")).status_code == 403
        get_run = _SERVICE.methods_by_name["GetRun"]
        request = ame_service_pb2.GetRunRequest(run_id=world.run_id)
        assert (await _invoke(world.grpc_target, token, get_run, request))[0] == grpc.StatusCode.PERMISSION_DENIED
        # A full token never travels in a URL, and run tokens are not listed as the organisation's tokens.
        in_url = await client.get(f"/v1/runs/{world.run_id}/logs?token={world.a['read']}")
        assert in_url.status_code == 401
        listed = await client.get("/v1/tokens", headers=bearer(world.a["admin"]))
        assert world.run_id not in listed.text
