"""Where a project's files lie in the object store, and how an uploaded blob gets there whole.

Each file's bytes are a blob under the organisation, stored once however many versions and projects hold it;
a version's manifest is stored beside them for launchers. A blob is recorded in `project_blobs` only once it is
whole in the store, so a commit that finds every blob recorded never makes a half version (projects.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from ame_api.repositories import projects as repo
from ame_api.repositories import retention as retention_repo
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings
from ame_api.spooling import discard
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime
from ame_platform.storage import ObjectStore, open_object_store


class StoreComponent:
    """Opens the object store at start and closes it at the end of the drain (after the front doors)."""

    name = "object-store"

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise RuntimeError("the object store is not open yet")
        return self._store

    async def start(self, supervisor: Supervisor) -> None:
        self._store = await self._stack.enter_async_context(open_object_store(self._settings.storage))

    async def drain(self) -> None:
        await self._stack.aclose()


def blob_prefix(organisation: str) -> str:
    return f"orgs/{organisation}/blobs/"


def blob_key(organisation: str, sha256: str) -> str:
    return f"{blob_prefix(organisation)}{sha256[:2]}/{sha256}"


def manifest_key(organisation: str, version_id: str) -> str:
    """Where a version's manifest lies for launchers (a ProjectManifest): content-addressed like the blobs."""
    return f"orgs/{organisation}/manifests/{version_id[:2]}/{version_id}"


async def store_blob(
    runtime: Runtime,
    store: StoreComponent,
    *,
    organisation: str,
    sha256: str,
    size: int,
    chunks: AsyncIterator[bytes],
    spool_dir: Path | None,
) -> bool:
    """Spool the chunks to a temporary file while checking them against `sha256` and `size`, put the file into
    the store and record the blob; False when the organisation held it already. The caller checked the request."""
    org = organisation
    async with runtime.pool.acquire() as conn:
        if await repo.has_blob(conn, organisation=org, sha256=sha256):
            return False
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one quick metadata call per upload
    handle, name = tempfile.mkstemp(prefix="blob-", dir=spool_dir)
    spool = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = hashlib.sha256()
            received = 0
            async for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise InvalidRequest(f"the blob is larger than the {size} bytes its header declares")
                await asyncio.to_thread(_absorb, out, digest, chunk)
        if received != size:
            raise InvalidRequest(f"the blob ended after {received} of the {size} bytes its header declares")
        actual = digest.hexdigest()
        if actual != sha256:
            raise InvalidRequest(
                f"the uploaded bytes have sha256 {actual}, not {sha256}; was the file changed while it was pushed?"
            )
        key = blob_key(org, sha256)
        await store.store.put_file(key, spool)
        async with runtime.pool.acquire() as conn, conn.transaction():
            await retention_repo.lock_blobs_shared(conn, org)
            # Retention may have removed an unreferenced copy between the put and the lock: put it back
            # while the lock holds retention off, so a recorded blob is always whole in the store.
            if not await store.store.exists(key):
                await store.store.put_file(key, spool)
            return await repo.add_blob(conn, organisation=org, sha256=sha256, size=size)
    finally:
        discard(spool)


def _absorb(out: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)
