"""The same pushes with the api's blobs in S3 (the harness's moto server) instead of a local directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ame_platform.storage import S3ObjectStore, StorageSettings
from tests.integration.project_support import make_project, manifest_of, rest_push
from tests.integration.test_project_versions import (
    test_an_upload_cut_off_halfway_leaves_no_version_and_a_retry_completes_it,
    test_grpc_push_with_the_sdk_uploads_only_what_changed,
    test_rest_push_list_and_fetch,
)

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

__all__ = [
    "test_an_upload_cut_off_halfway_leaves_no_version_and_a_retry_completes_it",
    "test_grpc_push_with_the_sdk_uploads_only_what_changed",
    "test_rest_push_list_and_fetch",
]


@pytest.fixture
def api_storage(s3_settings: StorageSettings) -> StorageSettings:
    """Overrides the stack's local store: these tests run with project blobs in S3."""
    return s3_settings


async def test_blobs_land_in_the_bucket(rest: httpx.AsyncClient, api_storage: StorageSettings, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert (await rest_push(rest, root)).status_code == 201
    async with S3ObjectStore.open(api_storage) as store:
        keys = [info.key for info in await store.list("orgs/default/blobs/")]
    assert sorted(keys) == sorted({f"orgs/default/blobs/{e.sha256[:2]}/{e.sha256}" for e in manifest_of(root)})
