"""A remote run's artifacts: the launcher stores them per attempt in the object store, the api lists and streams
them over REST and gRPC, scoped to the run's organisation; bad paths and unknown runs are refused with a 4xx.

The S3 module (test_remote_artifacts_s3.py) runs the same tests against the harness's moto server.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.run_specs import run_spec_for_task
from ame.sdk.credentials import bearer, discover_token
from ame.spec import load_project, resolve_task
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

AME_YML = """\
project: artifacts
tasks:
  - name: train
    executor: !custom
      command: python train.py
    artifacts:
      paths: [out]
      saveChangedFiles: true
  - name: nothing
    executor: !custom
      command: python -c 'print("no artifacts")'
"""

TRAIN_PY = """\
import os
from pathlib import Path

Path("out/sub").mkdir(parents=True, exist_ok=True)
# 3 MiB of varied bytes: more than one download chunk.
Path("out/model.bin").write_bytes(bytes(range(256)) * (3 * 4096))
Path("out/sub/metrics.json").write_text('{"loss": 0.1}')
Path("notes.txt").write_text("changed by attempt " + os.environ["AME_RUN_ATTEMPT"] + "\\n")
print("trained")
"""

MODEL = bytes(range(256)) * (3 * 4096)


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "ame.yml").write_text(AME_YML)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "notes.txt").write_text("as pushed\n")
    return root


async def _run(stack: Stack, client: Grpc, root: Path, tmp_path: Path, task: str) -> run_pb2.Run:
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="artifacts")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), task), project="artifacts", project_version_id=version)
    response = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    followed = await client.follow(response.run.id)
    assert followed.end is not None
    deadline = time.monotonic() + 20
    run = await client.get(response.run.id)
    while run.state != followed.end.end.state:
        assert time.monotonic() < deadline, f"the run stayed {run_pb2.RunState.Name(run.state)}"
        await asyncio.sleep(0.05)
        run = await client.get(response.run.id)
    return run


async def test_artifacts_of_a_remote_run_are_listed_and_streamed_over_grpc_and_rest(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    run = await _run(stack, client, _project(tmp_path / "project"), tmp_path, "train")
    assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run.reason

    listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=run.id))
    found = {a.path: (a.size, a.sha256, a.attempt) for a in listed.artifacts}
    assert found == {
        "notes.txt": (len(b"changed by attempt 1\n"), hashlib.sha256(b"changed by attempt 1\n").hexdigest(), 1),
        "out/model.bin": (len(MODEL), hashlib.sha256(MODEL).hexdigest(), 1),
        "out/sub/metrics.json": (13, hashlib.sha256(b'{"loss": 0.1}').hexdigest(), 1),
    }

    parts = [
        part
        async for part in client.stub.DownloadArtifact(
            ame_service_pb2.DownloadArtifactRequest(run_id=run.id, path="out/model.bin")
        )
    ]
    assert parts[0].artifact.sha256 == hashlib.sha256(MODEL).hexdigest()
    assert len(parts) > 2  # streamed in chunks, not one message
    assert b"".join(p.chunk for p in parts[1:]) == MODEL

    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as http:
        response = await http.get(f"/v1/runs/{run.id}/artifacts")
        assert response.status_code == 200
        assert [a["path"] for a in response.json()["artifacts"]] == sorted(found)
        async with http.stream("GET", f"/v1/runs/{run.id}/artifacts/out/sub/metrics.json") as download:
            assert download.status_code == 200
            assert download.headers["x-ame-sha256"] == found["out/sub/metrics.json"][1]
            assert await download.aread() == b'{"loss": 0.1}'


async def test_bad_artifact_requests_get_a_4xx(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    run = await _run(stack, client, _project(tmp_path / "project"), tmp_path, "train")
    unknown = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as http:
        for path in ("..%2F..%2Fetc%2Fpasswd", "out/..%2F..%2Fx", "%2Fetc%2Fpasswd", "out//model.bin", "a%5Cb"):
            response = await http.get(f"/v1/runs/{run.id}/artifacts/{path}")
            assert response.status_code == 422, (path, response.text)
            assert "artifact path" in response.json()["error"]
        response = await http.get(f"/v1/runs/{run.id}/artifacts/out/missing.bin")
        assert response.status_code == 404
        assert "has no artifact 'out/missing.bin'" in response.json()["error"]
        for url in (f"/v1/runs/{unknown}/artifacts", f"/v1/runs/{unknown}/artifacts/out/model.bin"):
            response = await http.get(url)
            assert response.status_code == 404, url
            assert "not found" in response.json()["error"]
        response = await http.get(f"/v1/runs/{run.id}/artifacts/out/model.bin", params={"attempt": 0})
        assert response.status_code == 422

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=unknown))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.ListRunArtifacts(
            ame_service_pb2.ListRunArtifactsRequest(organisation="someone-else", run_id=run.id)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    request = ame_service_pb2.DownloadArtifactRequest(run_id=run.id, path="../../etc/passwd")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in client.stub.DownloadArtifact(request):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_run_that_saves_nothing_lists_no_artifacts(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    run = await _run(stack, client, _project(tmp_path / "project"), tmp_path, "nothing")
    assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run.reason
    listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=run.id))
    assert list(listed.artifacts) == []


async def test_an_object_store_that_refuses_artifacts_fails_the_run_with_the_reason(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    # A file where the runs' directory must be: every artifact write fails, whoever runs the tests (root too).
    blocker = tmp_path / "objects" / "orgs" / "default" / "runs"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    started = time.monotonic()
    run = await _run(stack, client, root, tmp_path, "train")
    assert run.state == run_pb2.RUN_STATE_FAILED
    assert run.reason.startswith("the run's artifacts could not be stored: could not store artifact")
    assert "after 5 tries" in run.reason
    assert time.monotonic() - started < 60  # retried with backoff, then failed: no hang
