"""The retention test with the object store in S3 (the harness's moto server)."""

from __future__ import annotations

import pytest

from ame_platform.storage import StorageSettings
from tests.integration.test_retention import test_retention_removes_old_unreferenced_things_and_keeps_the_rest

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

__all__ = ["test_retention_removes_old_unreferenced_things_and_keeps_the_rest"]


@pytest.fixture
def api_storage(s3_settings: StorageSettings) -> StorageSettings:
    return s3_settings
