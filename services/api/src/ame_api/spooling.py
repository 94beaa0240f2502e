"""Objects served from a spool file: the store's copy is fetched whole to a temporary file first (so the store's
client is not held while a slow client reads), then streamed from it in chunks and removed; nothing is held in
memory."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ame.storage import ObjectNotFound, ObjectStore
from ame_api.repositories.runs import NotFound

_CHUNK = 1024 * 1024


async def spooled(
    store: ObjectStore, key: str, *, spool_dir: Path | None, prefix: str, missing: str
) -> AsyncIterator[bytes]:
    """The object's bytes in chunks; NotFound(`missing`) when the store does not hold it."""
    handle, name = tempfile.mkstemp(prefix=prefix, dir=spool_dir)
    os.close(handle)
    spool = Path(name)
    try:
        await store.get_file(key, spool)
    except ObjectNotFound:
        discard(spool)
        raise NotFound(missing) from None
    except BaseException:
        discard(spool)
        raise
    return _read_and_remove(spool)


async def _read_and_remove(path: Path) -> AsyncIterator[bytes]:
    try:
        with path.open("rb") as stream:
            while chunk := await asyncio.to_thread(stream.read, _CHUNK):
                yield chunk
    finally:
        discard(path)


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)
