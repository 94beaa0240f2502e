"""Data sets on the launcher: placing the versions a run reads, and storing the version a producing run made.

`materialise_data_sets` is the one step a run's directory needs before its command starts (the local backend calls
it; a Kubernetes init container calls it the same way): each data set's files are hard-linked from the content
cache at the producer's `path`, so every run of every task on this launcher shares one inode per file, and a blob
is fetched once per cache. `store_data_set_output` turns what a producing run left at its `path` into a version:
content-addressed blobs (only those the store lacks are written), a manifest whose id is its digest, and last the
result object the api reads when the run has succeeded; a failure fails the run with the reason. Output over the
data set's declared `size:` is such a failure, found before anything is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from ame.content_cache import MaterialiseError, Placed
from ame.data_sets import check_data_set_path, check_data_set_size, scan_output
from ame.domain.projects import manifest_digest
from ame.storage import ObjectStore
from ame_launcher import convert
from ame_launcher.project_versions import VersionReader
from ame_launcher.settings import LauncherSettings
from ame_launcher.store_retries import retrying

__all__ = ["DataSetStoreError", "materialise_data_sets", "store_data_set_output"]

_T = TypeVar("_T")


class DataSetStoreError(Exception):
    """The data set version could not be stored; the message says why."""


async def materialise_data_sets(
    versions: VersionReader, data_sets: Sequence[convert.DataSetSource], run_dir: Path
) -> Placed:
    """Place every data set the run reads under `run_dir` (at its path), before the run's command starts.

    Raises MaterialiseError (with the reason) when a path leaves the directory or a version cannot be read.
    """
    total = Placed()
    for source in data_sets:
        try:
            path = check_data_set_path(source.path)
        except ValueError as exc:
            raise MaterialiseError(str(exc)) from None
        placed = await versions.materialise_data_set(
            convert.DataSetSource(source.name, path, source.version_id, source.manifest_key, source.blob_prefix),
            run_dir,
        )
        total.fetched += placed.fetched
        total.linked += placed.linked
        total.copied += placed.copied
        total.reflinked += placed.reflinked
    return total


async def store_data_set_output(
    store: ObjectStore, settings: LauncherSettings, output: convert.DataSetOutput, run_dir: Path
) -> tuple[str, int, int]:
    """Store what the run left at `output.path` as a data set version; returns (version id, files, bytes)."""
    try:
        path = check_data_set_path(output.path)
    except ValueError as exc:
        raise DataSetStoreError(str(exc)) from None
    root = run_dir / path
    if not await asyncio.to_thread(root.is_dir):
        raise DataSetStoreError(f"the task left nothing at the data set's path {path!r}")
    entries = await asyncio.to_thread(scan_output, root)
    try:
        # Before any upload: a production over its declared size stores nothing.
        check_data_set_size(output.name, entries, output.max_bytes)
    except ValueError as exc:
        raise DataSetStoreError(str(exc)) from None
    version_id = manifest_digest(entries)

    async def attempt(what: str, action: Callable[[], Awaitable[_T]]) -> _T:
        return await retrying(
            settings,
            action,
            what=f"storing {what}",
            gave_up=lambda tries, detail: DataSetStoreError(
                f"could not store {what} of data set {output.name!r} after {tries} tries: {detail}"
            ),
        )

    done: set[str] = set()
    for entry in entries:
        if entry.sha256 in done:
            continue
        done.add(entry.sha256)
        key = f"{output.blob_prefix}{entry.sha256[:2]}/{entry.sha256}"
        if await attempt("a blob check", partial(store.exists, key)):
            continue
        await attempt(f"file {entry.path!r}", partial(store.put_file, key, root / entry.path))
    manifest_key = f"{output.manifest_prefix}{version_id[:2]}/{version_id}"
    manifest = convert.manifest_object(version_id, entries)
    await attempt("the manifest", lambda: store.put_bytes(manifest_key, manifest))
    await attempt("the result", lambda: store.put_bytes(output.result_key, version_id.encode("ascii")))
    return version_id, len(entries), sum(e.size for e in entries)
