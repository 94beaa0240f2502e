"""Choose and open the object store the settings name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ame.storage.local import LocalObjectStore
from ame.storage.port import ObjectStore
from ame_platform.storage.s3 import S3ObjectStore
from ame_platform.storage.settings import StorageSettings


@contextlib.asynccontextmanager
async def open_object_store(settings: StorageSettings) -> AsyncIterator[ObjectStore]:
    """The configured store, ready for use until the context exits; enter it in the service lifespan."""
    if settings.backend == "s3":
        async with S3ObjectStore.open(settings) as store:
            yield store
    else:
        yield LocalObjectStore(settings.local_root)
