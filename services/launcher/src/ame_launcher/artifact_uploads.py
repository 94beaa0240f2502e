"""Storing a remote run's artifacts: each attempt's files go to the object store, then the attempt's index.

The runner (the same one as `-l`) decides what to save (`artifacts.paths` and, with `saveChangedFiles`, the files
that differ from the materialised version) and calls `put_file` for each; `AttemptArtifacts` stands in for its
store and puts each file under the run and attempt (keys in `ame.domain.artifacts`), hashing it on the way (the
file is streamed from disk, never held in memory). `finish` writes the index the api lists from. Every write is
bounded by a timeout and retried with backoff; when the tries run out, `ArtifactStoreError` names the file, and
the backend fails the attempt with that reason rather than hang.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ame import codecs
from ame.domain.artifacts import Artifact, ArtifactPathError, artifact_key, index_key
from ame.storage import ObjectInfo, ObjectStore
from ame_launcher.settings import LauncherSettings
from ame_launcher.store_retries import retrying

__all__ = ["ArtifactStoreError", "AttemptArtifacts"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_HASH_CHUNK = 1024 * 1024


class ArtifactStoreError(Exception):
    """An artifact could not be stored after every try; the message says which and why."""


class AttemptArtifacts:
    """An `ObjectStore` for the runner that files what it saves under one attempt of one run.

    The runner names files `<runner_prefix><path>`; only `put_file` is part of what the runner uses, and the
    other methods pass through to the store unchanged.
    """

    def __init__(
        self,
        store: Callable[[], Awaitable[ObjectStore]],
        settings: LauncherSettings,
        *,
        organisation: str,
        run_id: str,
        attempt: int,
        runner_prefix: str,
        always_index: bool = False,
    ) -> None:
        self._store = store
        self._settings = settings
        self._organisation = organisation
        self._run_id = run_id
        self._attempt = attempt
        self._runner_prefix = runner_prefix
        # A pipeline step's index is written even when empty: later steps then tell "saved nothing" from
        # "removed by retention".
        self._always_index = always_index
        self.saved: list[Artifact] = []

    async def put_file(self, key: str, path: Path) -> None:
        relative = key.removeprefix(self._runner_prefix)
        try:
            target = artifact_key(self._organisation, self._run_id, self._attempt, relative)
        except ArtifactPathError as exc:
            raise ArtifactStoreError(f"artifact {relative!r} cannot be stored: {exc}") from None
        size, sha256 = await asyncio.to_thread(_size_and_sha256, path)
        store = await self._open()
        await self._retrying(f"artifact {relative!r}", lambda: store.put_file(target, path))
        self.saved.append(Artifact(path=relative, size=size, sha256=sha256, attempt=self._attempt))

    async def finish(self) -> list[Artifact]:
        """Write the attempt's index (when it saved anything, or always for a pipeline step), which makes its
        artifacts visible."""
        if not self.saved and not self._always_index:
            return []
        data = codecs.artifact_index_to_bytes(self._run_id, self._attempt, self.saved)
        key = index_key(self._organisation, self._run_id, self._attempt)
        store = await self._open()
        await self._retrying("the artifact index", lambda: store.put_bytes(key, data))
        return list(self.saved)

    async def _open(self) -> ObjectStore:
        try:
            return await self._store()
        except Exception as exc:
            raise ArtifactStoreError(f"the object store could not be opened to store artifacts: {exc}") from None

    async def _retrying(self, what: str, action: Callable[[], Awaitable[_T]]) -> _T:
        return await retrying(
            self._settings,
            action,
            what=f"storing {what}",
            gave_up=lambda tries, detail: ArtifactStoreError(
                f"could not store {what} in the object store after {tries} tries: {detail}"
            ),
        )

    # The rest of the port, unused by the runner: straight through to the store.

    async def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        await (await self._open()).put_bytes(key, data, content_type)

    async def get_bytes(self, key: str) -> bytes:
        return await (await self._open()).get_bytes(key)

    async def get_file(self, key: str, dest: Path) -> None:
        await (await self._open()).get_file(key, dest)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        return await (await self._open()).list(prefix)

    async def delete(self, key: str) -> None:
        await (await self._open()).delete(key)

    async def exists(self, key: str) -> bool:
        return await (await self._open()).exists(key)


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
