"""Object store on the local filesystem: one file per object under a root directory."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ame.storage.port import (
    PARTIAL_SUFFIX,
    ObjectInfo,
    ObjectNotFound,
    validate_key,
    validate_prefix,
)


class LocalObjectStore:
    """Stores each object as `root/<key>`.

    Every write goes to a `.ame-partial` file next to the target and is renamed over it, so readers and
    a crash mid-write never leave a truncated object behind. `content_type` is not kept. Empty
    directories are left in place after deletes: pruning them would race with concurrent writers.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        target = self._path(key)
        await asyncio.to_thread(_write_atomically, target, lambda partial: partial.write_bytes(data))

    async def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        await asyncio.to_thread(_write_atomically, target, lambda partial: shutil.copyfile(path, partial))

    async def get_bytes(self, key: str) -> bytes:
        target = self._path(key)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    async def get_file(self, key: str, dest: Path) -> None:
        source = self._path(key)

        def copy(partial: Path) -> None:
            try:
                shutil.copyfile(source, partial)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFound(key) from None

        await asyncio.to_thread(_write_atomically, dest, copy)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        target = self._path(key)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            await asyncio.to_thread(target.unlink)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Walk only the deepest directory the prefix pins down, not the whole root.
        directory_part = prefix.rpartition("/")[0]
        start = self.root.joinpath(*directory_part.split("/")) if directory_part else self.root
        found: builtins.list[ObjectInfo] = []
        for directory, _subdirs, files in os.walk(start):
            for name in files:
                if name.endswith(PARTIAL_SUFFIX):
                    continue
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # deleted while we walked
                found.append(ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=UTC)))
        found.sort(key=lambda info: info.key)
        return found


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Create `target` by calling `write(partial_path)` and renaming the result into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
    try:
        write(partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
