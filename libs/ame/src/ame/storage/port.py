"""The object-store port: what services need from blob storage, independent of where blobs live."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

_MAX_KEY_BYTES = 1024  # the S3 limit; the local adapter keeps to it so keys stay portable
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
PARTIAL_SUFFIX = ".ame-partial"


class StorageError(Exception):
    """Base class for object-store errors."""


class ObjectNotFound(StorageError, KeyError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object stored under {self.key!r}"


class InvalidKeyError(StorageError, ValueError):
    """The key is not a valid object key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


class ObjectStore(Protocol):
    """Blob storage addressed by '/'-separated keys such as `runs/42/logs/000001.log`.

    Writes replace whole objects and readers never see a partial one. Deleting a missing key is not
    an error, as in S3.
    """

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    async def put_file(self, key: str, path: Path) -> None:
        """Upload a file; large files go up in parts where the backend supports it."""
        ...

    async def get_bytes(self, key: str) -> bytes:
        """Raises ObjectNotFound."""
        ...

    async def get_file(self, key: str, dest: Path) -> None:
        """Download to `dest`, replacing it atomically; raises ObjectNotFound and then leaves `dest` alone."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Objects whose key starts with `prefix` (a plain string prefix, as in S3), sorted by key."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...


def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise InvalidKeyError.

    Valid keys are non-empty '/'-separated paths without leading or trailing '/', empty, '.' or '..'
    segments, backslashes or control characters. The same rules on every backend keep a key that
    works locally from failing on S3, and keep the local adapter inside its root directory.
    """
    if not key:
        raise InvalidKeyError("an object key cannot be empty")
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key longer than {_MAX_KEY_BYTES} bytes")
    if _FORBIDDEN_CHARS.search(key):
        raise InvalidKeyError(f"object key {key!r} contains a control character or backslash")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"object key {key!r} has an empty, '.' or '..' segment")
        if segment.endswith(PARTIAL_SUFFIX):
            raise InvalidKeyError(f"object key {key!r} uses the reserved suffix {PARTIAL_SUFFIX!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, but also allows the empty prefix and a trailing '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix
