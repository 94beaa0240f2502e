"""The same remote runs with the project's blobs and manifest in S3 (the harness's moto server)."""

from __future__ import annotations

import pytest

from ame_platform.storage import StorageSettings
from tests.integration.test_remote_tasks import (
    test_a_failing_command_exits_with_its_code_on_both_sides,
    test_a_timeout_exits_124_on_both_sides,
    test_custom_task_reads_its_project_files_remotely_as_locally,
)

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

__all__ = [
    "test_a_failing_command_exits_with_its_code_on_both_sides",
    "test_a_timeout_exits_124_on_both_sides",
    "test_custom_task_reads_its_project_files_remotely_as_locally",
]


@pytest.fixture
def api_storage(s3_settings: StorageSettings) -> StorageSettings:
    """Overrides the stack's local store: the api writes and the launchers read S3."""
    return s3_settings
