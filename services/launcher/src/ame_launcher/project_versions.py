"""Reading a run's project version from the object store: its manifest, then its blobs into the content cache.

The launcher reads the store directly (the api's keys travel in the launch command's `ProjectSource`), so a run
does not depend on the api being up, and blobs do not pass through it. Every read is bounded by a timeout and
retried with backoff; an object that is not there, or bytes that do not match their digest, fail at once. A run
that cannot get its files fails with a reason naming what could not be read, never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ame import codecs
from ame.data_sets import clear_conflicts
from ame.domain import FileLayer
from ame.domain.artifacts import Artifact, artifact_key, drop_conflicts, index_key
from ame.domain.projects import ManifestEntry, manifest_digest
from ame_launcher import convert
from ame_launcher.content_cache import ContentCache, MaterialiseError, Placed, Placement
from ame_launcher.settings import LauncherSettings
from ame_launcher.store_retries import retrying
from ame_platform.storage import InvalidKeyError, ObjectNotFound, ObjectStore, open_object_store

__all__ = ["VersionReader"]


log = logging.getLogger(__name__)
_T = TypeVar("_T")
# Parsed manifests kept in memory, most recently used first out last (a 100,000-file one is some tens of MB).
_KEPT_MANIFESTS = 16
# Parsed saved-file indexes of pipeline steps kept in memory: step k of a sequential pipeline lays the k-1 before
# it, so without them the last steps of a long pipeline would each read every earlier index again.
_KEPT_INDEXES = 512
# ... and at most this many files across them (one index of a step that wrote 100,000 files is tens of MB).
_KEPT_INDEX_FILES = 200_000


class VersionReader:
    """Materialises versions into run directories; opens the object store on first use, closes it on `close`."""

    def __init__(self, settings: LauncherSettings) -> None:
        self._settings = settings
        self.cache = ContentCache(settings.content_dir, settings.placement)
        self._stack = contextlib.AsyncExitStack()
        self._store: ObjectStore | None = None
        self._opening = asyncio.Lock()
        self._manifests: OrderedDict[tuple[str, str], list[ManifestEntry]] = OrderedDict()
        self._indexes: OrderedDict[str, list[Artifact]] = OrderedDict()
        self._index_files = 0

    async def close(self) -> None:
        await self._stack.aclose()
        self._store = None

    async def store(self) -> ObjectStore:
        """The object store, opened on first use (artifacts of runs are written to it as well)."""
        return await self._open()

    async def _open(self) -> ObjectStore:
        async with self._opening:
            if self._store is None:
                self._store = await self._retrying(
                    "opening the object store",
                    lambda: self._stack.enter_async_context(open_object_store(self._settings.storage)),
                )
            return self._store

    async def materialise(self, version_id: str, source: convert.ProjectSource, dest: Path) -> Placed:
        store = await self._open()
        entries = await self._manifest(store, version_id, source)

        async def fetch(sha256: str, temp: Path) -> None:
            key = f"{source.blob_prefix}{sha256[:2]}/{sha256}"
            await self._retrying(f"blob {sha256}", lambda: store.get_file(key, temp))

        return await self.cache.materialise(entries, dest, fetch)

    async def materialise_data_set(self, source: convert.DataSetSource, dest: Path) -> Placed:
        """Place the data set version's files at `dest / source.path`, hard-linked from the cache (copied only where
        placement is `copy`), replacing whatever the project version had there."""
        store = await self._open()
        entries = await self._manifest(
            store, source.version_id, convert.ProjectSource(source.manifest_key, source.blob_prefix)
        )
        prefixed = [entry.model_copy(update={"path": f"{source.path}/{entry.path}"}) for entry in entries]

        async def fetch(sha256: str, temp: Path) -> None:
            key = f"{source.blob_prefix}{sha256[:2]}/{sha256}"
            await self._retrying(f"blob {sha256} of data set {source.name}", lambda: store.get_file(key, temp))

        await asyncio.to_thread(clear_conflicts, dest, [entry.path for entry in prefixed])
        placement: Placement = "copy" if self._settings.placement == "copy" else "link"
        return await self.cache.materialise(prefixed, dest, fetch, placement)

    async def materialise_layered(
        self,
        version_id: str,
        source: convert.ProjectSource | None,
        organisation: str,
        layers: list[FileLayer],
        dest: Path,
    ) -> Placed:
        """A pipeline step's files (`layered_files`) through the content cache in one pass, so a layer's file is
        fetched once per launcher and hard-linked like the version's own files."""
        store = await self._open()
        files = await self.layered_files(version_id, source, organisation, layers)
        keys = {entry.sha256: key for entry, key in files}

        async def fetch(sha256: str, temp: Path) -> None:
            await self._retrying(f"blob {sha256}", lambda: store.get_file(keys[sha256], temp))

        return await self.cache.materialise([entry for entry, _ in files], dest, fetch)

    async def layered_files(
        self,
        version_id: str,
        source: convert.ProjectSource | None,
        organisation: str,
        layers: list[FileLayer],
    ) -> list[tuple[ManifestEntry, str]]:
        """A pipeline step's files, each with the object-store key of its bytes: the version's (if any), then each
        earlier step's saved files over them, in order (a later layer wins a path; `drop_conflicts`). Both
        backends place exactly this list: the local one through its content cache, a pod by URL. Raises
        MaterialiseError when the version or a layer's index cannot be read."""
        store = await self._open()
        files: dict[str, tuple[ManifestEntry, str]] = {}
        if version_id and source is not None:
            for entry in await self._manifest(store, version_id, source):
                files[entry.path] = (entry, f"{source.blob_prefix}{entry.sha256[:2]}/{entry.sha256}")
        saved = await asyncio.gather(*(self._saved_files(store, organisation, layer) for layer in layers))
        for layer, artifacts in zip(layers, saved, strict=True):
            for artifact in artifacts:
                drop_conflicts(files, artifact.path)
                files[artifact.path] = (
                    ManifestEntry(path=artifact.path, sha256=artifact.sha256, size=artifact.size),
                    artifact_key(organisation, layer.run_id, layer.attempt, artifact.path),
                )
        return list(files.values())

    async def _saved_files(self, store: ObjectStore, organisation: str, layer: FileLayer) -> list[Artifact]:
        # An attempt's index is written once, when the attempt ends, and a layer names only an ended attempt:
        # what was read once stays true.
        key = index_key(organisation, layer.run_id, layer.attempt)
        kept = self._indexes.get(key)
        if kept is not None:
            self._indexes.move_to_end(key)
            return kept
        data = await self._retrying(
            f"the saved files of earlier step run {layer.run_id} (attempt {layer.attempt})", _reader(store, key)
        )
        try:
            saved = codecs.artifact_index_from_bytes(data)
        except ValueError as exc:
            raise MaterialiseError(f"the saved files of run {layer.run_id} are unreadable: {exc}") from None
        if key not in self._indexes:
            self._indexes[key] = saved
            self._index_files += len(saved)
        while len(self._indexes) > _KEPT_INDEXES or (self._index_files > _KEPT_INDEX_FILES and len(self._indexes) > 1):
            _, dropped = self._indexes.popitem(last=False)
            self._index_files -= len(dropped)
        return saved

    async def _manifest(
        self, store: ObjectStore, version_id: str, source: convert.ProjectSource
    ) -> list[ManifestEntry]:
        # A version never changes, and what is kept was checked against its id: many runs of one version
        # read and parse its manifest once.
        kept = self._manifests.get((source.manifest_key, version_id))
        if kept is not None:
            self._manifests.move_to_end((source.manifest_key, version_id))
            return kept
        data = await self._retrying(
            f"the manifest of version {version_id}", lambda: store.get_bytes(source.manifest_key)
        )
        try:
            stored_id, entries = convert.parse_manifest(data)
        except convert.DecodeError as exc:
            raise MaterialiseError(f"the manifest of version {version_id} is unreadable: {exc}") from None
        # The manifest hashes to its version id, so what was read is exactly the version the run names.
        if stored_id != version_id or manifest_digest(entries) != version_id:
            raise MaterialiseError(f"the object store's manifest at {source.manifest_key} is not version {version_id}")
        self._manifests[(source.manifest_key, version_id)] = entries
        while len(self._manifests) > _KEPT_MANIFESTS:
            self._manifests.popitem(last=False)
        return entries

    async def _retrying(self, what: str, action: Callable[[], Awaitable[_T]]) -> _T:
        def permanent(exc: Exception) -> Exception | None:
            if isinstance(exc, ObjectNotFound | InvalidKeyError):
                return MaterialiseError(f"{what} is not in the object store ({exc})")
            return exc if isinstance(exc, MaterialiseError) else None

        return await retrying(
            self._settings,
            action,
            what=f"reading {what} from the object store",
            gave_up=lambda tries, detail: MaterialiseError(
                f"could not read {what} from the object store after {tries} tries: {detail}"
            ),
            permanent=permanent,
        )


def _reader(store: ObjectStore, key: str) -> Callable[[], Awaitable[bytes]]:
    return lambda: store.get_bytes(key)
