"""The object-store port, owned here once, and its local-directory implementation.

Project blobs (the api, the launcher), artifacts of remote runs (the launcher writes, the api reads) and
artifacts of local runs (`ame task run -l`) all go through `ObjectStore`. The S3 implementation lives in
`ame_platform.storage` with the settings that choose between the two, so the CLI does not need aioboto3.
"""

from ame.storage.local import LocalObjectStore
from ame.storage.port import (
    PARTIAL_SUFFIX,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_key,
    validate_prefix,
)

__all__ = [
    "PARTIAL_SUFFIX",
    "InvalidKeyError",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "validate_key",
    "validate_prefix",
]
