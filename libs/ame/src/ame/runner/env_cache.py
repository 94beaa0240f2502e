"""A cache of built directories (virtual environments, provisioned tools) keyed by their inputs.

Layout under the cache root:

    <key>                  symlink -> store/<key>.<token>   (the published entry)
    store/<key>.<token>/   the entry itself, with ame-env.json written last by the builder
    locks/<key>.lock       flock: exclusive while building or pruning, shared while in use

An entry is built in its final directory and published by atomically renaming a symlink over
`<key>`. Moving a finished venv instead would break it: venvs and console scripts embed absolute
paths. Readers see either no entry or a complete one; a crashed build leaves only an unpublished
store directory, which the next builder of that key (or `prune`) deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Builder", "CacheEntry", "EnvironmentCache", "Lease"]

_META = "ame-env.json"
_LOCK_POLL_SECONDS = 0.05

Builder = Callable[[Path], Awaitable[None]]


@dataclass(frozen=True)
class Lease:
    """An entry held in use; it cannot be pruned until the lease ends."""

    key: str
    path: Path
    built: bool


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    created_at: float
    last_used_at: float
    size_bytes: int
    description: Mapping[str, str] = field(default_factory=dict)


class EnvironmentCache:
    """Build-once, share-safely directories. Safe across processes, not just tasks."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.asynccontextmanager
    async def lease(
        self, key: str, build: Builder, *, description: Mapping[str, str] | None = None
    ) -> AsyncIterator[Lease]:
        """Yield the entry for `key`, building it with `build(directory)` first if needed."""
        _check_key(key)
        fd = self._open_lock(key)
        try:
            await _flock(fd, fcntl.LOCK_SH)
            path = self._published(key)
            built = False
            if path is None:
                # Upgrade: drop the shared lock and queue for the exclusive one. Another process may
                # build meanwhile, so look again once we hold it.
                fcntl.flock(fd, fcntl.LOCK_UN)
                await _flock(fd, fcntl.LOCK_EX)
                path = self._published(key)
                if path is None:
                    path = await self._build(key, build, description or {})
                    built = True
                fcntl.flock(fd, fcntl.LOCK_SH)
            _touch(path / _META)
            yield Lease(key, path, built)
        finally:
            os.close(fd)

    def find(self, key: str) -> Path | None:
        """The published entry for `key`, without locking (for display only)."""
        return self._published(key)

    def entries(self) -> list[CacheEntry]:
        entries: list[CacheEntry] = []
        if not self.root.is_dir():
            return entries
        for link in sorted(self.root.iterdir()):
            if link.name.startswith(".") or not link.is_symlink():
                continue
            path = self._published(link.name)
            if path is not None:
                entries.append(_entry(link.name, path))
        return entries

    def prune(self, *, unused_for_seconds: float | None) -> list[CacheEntry]:
        """Delete entries unused for that long (None: all) that nobody holds; return what went."""
        cutoff = None if unused_for_seconds is None else time.time() - unused_for_seconds
        removed: list[CacheEntry] = []
        for entry in self.entries():
            if cutoff is not None and entry.last_used_at >= cutoff:
                continue
            if self._delete_if_idle(entry.key, entry):
                removed.append(entry)
        self._delete_orphans()
        return removed

    def _delete_if_idle(self, key: str, entry: CacheEntry) -> bool:
        fd = self._open_lock(key)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use or being built
            with contextlib.suppress(FileNotFoundError):
                (self.root / key).unlink()
            shutil.rmtree(entry.path, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def _delete_orphans(self) -> None:
        store = self.root / "store"
        if not store.is_dir():
            return
        published = {
            (self.root / link.name).resolve()
            for link in self.root.iterdir()
            if link.is_symlink() and not link.name.startswith(".")
        }
        for directory in store.iterdir():
            if directory.resolve() in published:
                continue
            key = directory.name.rsplit(".", 1)[0]
            fd = self._open_lock(key)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a build of this key is in progress
                shutil.rmtree(directory, ignore_errors=True)
            finally:
                os.close(fd)

    def _open_lock(self, key: str) -> int:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return os.open(locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def _published(self, key: str) -> Path | None:
        link = self.root / key
        if not link.is_symlink():
            return None
        path = link.resolve()
        return path if (path / _META).is_file() else None

    async def _build(self, key: str, build: Builder, description: Mapping[str, str]) -> Path:
        store = self.root / "store"
        store.mkdir(parents=True, exist_ok=True)
        # We hold the exclusive lock, so any other directory for this key is a dead attempt.
        for stale in store.glob(f"{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        token = secrets.token_hex(4)
        path = store / f"{key}.{token}"
        path.mkdir()
        try:
            await build(path)
            self._publish(key, path, description)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return path

    def _publish(self, key: str, path: Path, description: Mapping[str, str]) -> None:
        meta = {"key": key, "created_at": time.time(), "description": dict(description)}
        (path / _META).write_text(json.dumps(meta, indent=2))
        staging = self.root / f".{path.name}.link"
        os.symlink(os.path.relpath(path, self.root), staging)
        os.replace(staging, self.root / key)


def _check_key(key: str) -> None:
    if not key or "/" in key or key.startswith(".") or key in ("store", "locks"):
        raise ValueError(f"invalid cache key {key!r}")


async def _flock(fd: int, operation: int) -> None:
    # Poll instead of blocking in a thread: a thread stuck in flock() cannot be cancelled, and
    # Ctrl-C while waiting for another build must return promptly.
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(_LOCK_POLL_SECONDS)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _entry(key: str, path: Path) -> CacheEntry:
    meta_path = path / _META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    stat = meta_path.stat()
    description = meta.get("description") if isinstance(meta.get("description"), dict) else {}
    return CacheEntry(
        key=key,
        path=path,
        created_at=float(meta.get("created_at", stat.st_mtime)),
        last_used_at=stat.st_mtime,
        size_bytes=_tree_size(path),
        description={str(k): str(v) for k, v in description.items()},
    )


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
