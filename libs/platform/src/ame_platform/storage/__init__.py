"""Object storage for services: the port and local adapter from `ame.storage`, the S3 adapter, settings, factory."""

from ame.storage import (
    InvalidKeyError,
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
)
from ame_platform.storage.factory import open_object_store
from ame_platform.storage.s3 import S3ObjectStore
from ame_platform.storage.settings import StorageSettings

__all__ = [
    "InvalidKeyError",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "StorageSettings",
    "open_object_store",
    "validate_key",
]
