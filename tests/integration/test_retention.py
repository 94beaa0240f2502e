"""The api's retention job: something old and unreferenced goes, something referenced or recent stays.

Ages are set by moving the rows' timestamps back, as if the versions, blobs and runs were made 40 days ago.
The S3 module (test_retention_s3.py) runs the same test with the object store in S3.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain.artifacts import index_key, run_prefix
from ame.sdk import Client
from ame_api.project_store import StoreComponent, blob_key, manifest_key
from ame_api.retention import Retention
from ame_api.settings import ApiSettings
from ame_platform.lifecycle import Supervisor
from ame_platform.storage import StorageSettings
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.integration.test_remote_artifacts import AME_YML, TRAIN_PY, _run
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

ORG = "default"
OLD = datetime.now(UTC) - timedelta(days=40)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _push(stack: Stack, root: Path, tmp_path: Path, data: bytes) -> str:
    (root / "data.txt").write_bytes(data)
    return (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="artifacts")).version.id


async def _upload_loose_blob(stack: Stack, data: bytes) -> None:
    def upload() -> None:
        with Client(stack.grpc_target) as client:
            client.upload_blob("artifacts", _sha(data), len(data), iter([data]))

    await asyncio.to_thread(upload)


async def test_retention_removes_old_unreferenced_things_and_keeps_the_rest(
    stack: Stack, client: Grpc, tmp_path: Path, api_storage: StorageSettings
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "ame.yml").write_text(AME_YML)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "notes.txt").write_text("as pushed\n")

    old_version = await _push(stack, root, tmp_path, b"only in the old version\n")
    old_run = await _run(stack, client, root, tmp_path, "train")  # pushes the same tree: the old version
    used_version = await _push(stack, root, tmp_path, b"in the version a recent run used\n")
    recent_run = await _run(stack, client, root, tmp_path, "train")
    latest_version = await _push(stack, root, tmp_path, b"in the latest version\n")
    for run in (old_run, recent_run):
        assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run.reason
    await _upload_loose_blob(stack, b"an old push that never committed\n")
    await _upload_loose_blob(stack, b"a push in progress\n")

    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            "UPDATE project_versions SET created_at = $1 WHERE id = ANY($2::text[])", OLD, [old_version, used_version]
        )
        await conn.execute(
            "UPDATE project_blobs SET created_at = $1 WHERE organisation_id = $2 AND sha256 <> $3",
            OLD,
            ORG,
            _sha(b"a push in progress\n"),
        )
        await conn.execute(
            "UPDATE runs SET created_at = $1, started_at = $1, finished_at = $1 WHERE id = $2::uuid", OLD, old_run.id
        )

    settings = ApiSettings(
        storage=api_storage,
        retention_versions_after="30d",
        retention_blobs_after="1d",
        retention_artifacts_after="30d",
    )
    store = StoreComponent(settings)
    await store.start(Supervisor())
    try:
        objects = store.store
        assert await objects.exists(manifest_key(ORG, old_version))
        assert await objects.exists(index_key(ORG, old_run.id, 1))
        report = await Retention(stack.runtime, settings, store).run_once()

        assert report.versions == 1
        assert report.blobs == 2  # the old version's own file, and the old uncommitted upload
        assert report.artifact_runs == 1
        async with stack.runtime.pool.acquire() as conn:
            versions = {row["id"] for row in await conn.fetch("SELECT id FROM project_versions")}
            blobs = {row["sha256"] for row in await conn.fetch("SELECT sha256 FROM project_blobs")}
        assert old_version not in versions
        assert {used_version, latest_version} <= versions
        assert not await objects.exists(manifest_key(ORG, old_version))
        for gone in (b"only in the old version\n", b"an old push that never committed\n"):
            assert _sha(gone) not in blobs
            assert not await objects.exists(blob_key(ORG, _sha(gone)))
        for kept in (b"in the version a recent run used\n", b"in the latest version\n", b"a push in progress\n"):
            assert _sha(kept) in blobs
            assert await objects.exists(blob_key(ORG, _sha(kept)))
        # Files every version shares stay, though recorded 40 days ago.
        assert await objects.exists(blob_key(ORG, _sha(TRAIN_PY.encode())))

        assert await objects.list(run_prefix(ORG, old_run.id)) == []
        assert len(await objects.list(run_prefix(ORG, recent_run.id))) == 4  # 3 files and the index
        listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=old_run.id))
        assert list(listed.artifacts) == []
        listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=recent_run.id))
        assert len(listed.artifacts) == 3

        # The latest version still runs (its blobs are whole), and a second pass finds nothing more to remove.
        assert (await _run(stack, client, root, tmp_path, "train")).state == run_pb2.RUN_STATE_SUCCEEDED
        again = await Retention(stack.runtime, settings, store).run_once()
        assert (again.versions, again.blobs, again.artifact_runs) == (0, 0, 0)
    finally:
        await store.drain()
