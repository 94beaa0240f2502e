"""The remote artifact tests with the object store in S3 (the harness's moto server)."""

from __future__ import annotations

import pytest

from ame_platform.storage import StorageSettings
from tests.integration.test_remote_artifacts import (
    test_a_run_that_saves_nothing_lists_no_artifacts,
    test_artifacts_of_a_remote_run_are_listed_and_streamed_over_grpc_and_rest,
    test_bad_artifact_requests_get_a_4xx,
)

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

__all__ = [
    "test_a_run_that_saves_nothing_lists_no_artifacts",
    "test_artifacts_of_a_remote_run_are_listed_and_streamed_over_grpc_and_rest",
    "test_bad_artifact_requests_get_a_4xx",
]


@pytest.fixture
def api_storage(s3_settings: StorageSettings) -> StorageSettings:
    """Overrides the stack's local store: the launchers write and the api reads S3."""
    return s3_settings
