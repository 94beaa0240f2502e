"""Object storage: one port, a local-filesystem adapter and an S3 adapter."""

from ame_platform.storage.factory import open_object_store
from ame_platform.storage.local import LocalObjectStore
from ame_platform.storage.port import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
)
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
