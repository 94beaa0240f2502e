"""The content cache: each blob fetched once, then placed into run directories without copying (the launcher's runs and
the data sets of `ame task run -l`).

Layout under the cache root:

    blobs/<sha[:2]>/<sha>      the blob's bytes, mode 0444, mtime fixed at 2000-01-01 (the seal)
    blobs/<sha[:2]>/<sha>.x    the same bytes as an executable (0555): a hard link shares its inode's mode
    tmp/                       downloads in progress; renamed into blobs/ only once whole and verified

A blob enters the cache by an atomic hard link from its temp file, after its sha256 and size were checked, so a
launcher killed at any point leaves either no entry or a whole one (plus a stray temp file, removed once its
ctime is an hour old); the next launcher uses what is there. The first launcher to publish a blob wins; others
racing it drop their copy, so every run links to one inode. A run's files are placed from the cache:

* `reflink` (copy-on-write clone, btrfs/XFS): the run gets its own writable copy that shares the blocks;
* `link` (hard link): no data is written; the run's file is the cache's read-only inode, so a task that edits a
  project file in place gets EACCES (replacing it — write a new file, rename over — works). A process that
  ignores permissions (root) can still write through the link: the cache then notices its seal broken (size,
  mode or mtime changed) the next time the blob is wanted, drops the entry and fetches it again, so later runs
  get clean bytes; runs sharing the inode at that moment see the edit. Use `copy` where that matters;
* `copy`: a plain copy, for when neither works (across filesystems, or too many links on one inode).

`auto` (the default) clones where the filesystem can and hard-links otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ame.domain.projects import MODE_EXECUTABLE, MODE_SYMLINK, ManifestEntry, symlink_escapes

__all__ = ["ContentCache", "Fetch", "MaterialiseError", "Placed", "Placement"]

Placement = Literal["auto", "reflink", "link", "copy"]
# Fetch the blob with this sha256 into the given (temporary) path.
Fetch = Callable[[str, Path], Awaitable[None]]

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_SEAL_NS = 946_684_800 * 1_000_000_000  # 2000-01-01: after 1980, so zip-based builds accept the files
_STALE_TMP_SECONDS = 3600.0
_HASH_CHUNK = 1024 * 1024


class MaterialiseError(Exception):
    """The version could not be placed into the run's directory; the message says why."""


@dataclass
class Placed:
    """What one materialisation did (how many blobs were fetched, how files were placed)."""

    fetched: int = 0
    reflinked: int = 0
    linked: int = 0
    copied: int = 0
    symlinks: int = 0


class ContentCache:
    """Safe for concurrent materialisations, in one process (a blob is fetched once) and across processes."""

    def __init__(self, root: Path, placement: Placement = "auto", *, max_fetches: int = 8) -> None:
        self.root = root
        self.placement = placement
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._fetch_slots = asyncio.Semaphore(max_fetches)
        self._reflink_works: bool | None = None
        self._tidied = False
        # Materialisations in flight, and a lock `prune` holds while it removes blobs (new ones wait for it).
        self._users = 0
        self._pruning = asyncio.Lock()

    def blob_path(self, sha256: str, executable: bool = False) -> Path:
        return self._blobs / sha256[:2] / (f"{sha256}.x" if executable else sha256)

    async def materialise(
        self, entries: Iterable[ManifestEntry], dest: Path, fetch: Fetch, placement: Placement | None = None
    ) -> Placed:
        """Place every entry under `dest` (an empty directory), fetching only the blobs the cache lacks.
        `placement` overrides the cache's own for this call (data sets are hard-linked, never cloned)."""
        async with self._pruning:
            self._users += 1
        try:
            return await self._materialise(entries, dest, fetch, placement or self.placement)
        finally:
            self._users -= 1

    async def prune(self, unused_for: float, now: float | None = None) -> int:
        """Remove cached blobs that no run directory links to and that nothing placed for `unused_for` seconds;
        returns how many. Skipped (0) while a materialisation runs in this process; the next pass tries again.

        A blob's age is its ctime, which a hard link into a run directory renews (a clone or a copy does not, so
        a blob only ever cloned may be fetched again after `unused_for`). Launchers sharing one cache directory
        must prune from one of them only.
        """
        cutoff = (time.time() if now is None else now) - unused_for
        async with self._pruning:
            if self._users:
                return 0
            return await asyncio.to_thread(self._prune, cutoff)

    def _prune(self, cutoff: float) -> int:
        removed = 0
        for directory in sorted(self._blobs.glob("??")):
            for path in directory.iterdir():
                with contextlib.suppress(OSError):
                    info = path.lstat()
                    if info.st_nlink == 1 and info.st_ctime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    async def _materialise(
        self, entries: Iterable[ManifestEntry], dest: Path, fetch: Fetch, placement: Placement
    ) -> Placed:
        entries = list(entries)
        if not self._tidied:
            await asyncio.to_thread(self._tidy)
            self._tidied = True
        placed = Placed()
        wanted: dict[tuple[str, bool], int] = {}
        for entry in entries:
            executable = entry.mode == MODE_EXECUTABLE
            wanted[(entry.sha256, executable)] = entry.size
        # Plain blobs first (the executable form is made from the plain one, never fetched twice). One pass in
        # one thread finds what is missing: a warm cache then costs a stat per blob and nothing else.
        plain = {sha: size for (sha, _), size in wanted.items()}
        missing = await asyncio.to_thread(
            lambda: [(sha, size) for sha, size in plain.items() if not _sealed(self.blob_path(sha), size)]
        )
        tasks = [asyncio.ensure_future(self._ensure(sha, size, fetch)) for sha, size in missing]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One blob failed (or the run was cancelled): stop fetching the rest before saying so.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        placed.fetched = sum(results)
        executables = [(sha, size) for (sha, executable), size in wanted.items() if executable]
        await asyncio.to_thread(self._ensure_executables, executables)
        await asyncio.to_thread(self._place_all, entries, dest, placed, placement)
        return placed

    # The cache ---------------------------------------------------------------------------------------

    async def _ensure(self, sha256: str, size: int, fetch: Fetch) -> bool:
        """Make the plain blob present and sealed; True if this call fetched it."""
        path = self.blob_path(sha256)
        pending = self._inflight.get(sha256)
        if pending is not None:
            await asyncio.shield(pending)
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[sha256] = future
        try:
            # Another process may have placed it meanwhile; a broken seal is dropped and fetched again.
            if await asyncio.to_thread(_sealed, path, size):
                future.set_result(None)
                return False
            async with self._fetch_slots:
                await self._fetch_into_cache(sha256, size, path, fetch)
            future.set_result(None)
            return True
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; nobody else needs to see it
            raise
        finally:
            del self._inflight[sha256]

    async def _fetch_into_cache(self, sha256: str, size: int, path: Path, fetch: Fetch) -> None:
        await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
        temp = self._tmp / f"{sha256}.{uuid.uuid4().hex[:12]}"
        try:
            await fetch(sha256, temp)
            await asyncio.to_thread(_verify_and_seal, temp, sha256, size, 0o444)
            await asyncio.to_thread(_publish, temp, path, size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _ensure_executables(self, blobs: list[tuple[str, int]]) -> None:
        for sha256, size in blobs:
            self._ensure_executable(sha256, size)

    def _ensure_executable(self, sha256: str, size: int) -> None:
        path = self.blob_path(sha256, executable=True)
        if _sealed(path, size):
            return
        self._tmp.mkdir(parents=True, exist_ok=True)
        temp = self._tmp / f"{sha256}.x.{uuid.uuid4().hex[:12]}"
        try:
            shutil.copyfile(self.blob_path(sha256), temp)
            _verify_and_seal(temp, sha256, size, 0o555)
            _publish(temp, path, size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _tidy(self) -> None:
        """Remove downloads a killed launcher left behind (old enough that no live one is still writing)."""
        try:
            leftovers = list(self._tmp.iterdir())
        except FileNotFoundError:
            return
        cutoff = time.time() - _STALE_TMP_SECONDS
        for path in leftovers:
            with contextlib.suppress(OSError):
                # ctime, not mtime: a download being sealed by another launcher already has the seal's old mtime.
                if path.lstat().st_ctime < cutoff:
                    path.unlink()

    # The run's directory -----------------------------------------------------------------------------

    def _place_all(self, entries: list[ManifestEntry], dest: Path, placed: Placed, placement: Placement) -> None:
        made: set[Path] = set()
        for entry in entries:
            target = dest.joinpath(*entry.path.split("/"))
            parent = target.parent
            if parent not in made:
                parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
            if entry.mode == MODE_SYMLINK:
                link_target = self.blob_path(entry.sha256).read_bytes().decode("utf-8", "replace")
                if symlink_escapes(entry.path, link_target):
                    raise MaterialiseError(f"symbolic link {entry.path!r} points out of the project ({link_target!r})")
                os.symlink(link_target, target)
                placed.symlinks += 1
                continue
            source = self.blob_path(entry.sha256, entry.mode == MODE_EXECUTABLE)
            self._place(source, target, entry.mode, placed, placement)

    def _place(self, source: Path, target: Path, mode: int, placed: Placed, placement: Placement) -> None:
        writable = 0o755 if mode == MODE_EXECUTABLE else 0o644
        if placement in ("auto", "reflink") and self._reflink_works is not False:
            if _reflink(source, target):
                self._reflink_works = True
                os.chmod(target, writable)
                placed.reflinked += 1
                return
            if placement == "reflink":
                raise MaterialiseError(f"the filesystem of {target.parent} cannot clone files (placement: reflink)")
            self._reflink_works = False
        if placement in ("auto", "link"):
            try:
                os.link(source, target)
                placed.linked += 1
                return
            except OSError as exc:
                # Across filesystems, or an inode at its link limit: copying is the only way left.
                if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES):
                    raise
        shutil.copyfile(source, target)
        os.chmod(target, writable)
        placed.copied += 1


def _sealed(path: Path, size: int) -> bool:
    """Whether the cached blob is present and untouched; a broken seal is removed from the cache."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if (
        stat.S_ISREG(info.st_mode)
        and info.st_size == size
        and info.st_mtime_ns == _SEAL_NS
        and info.st_mode & 0o222 == 0
    ):
        return True
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # links already placed in run directories keep their inode; the cache forgets it
    return False


def _verify_and_seal(path: Path, sha256: str, size: int, mode: int) -> None:
    digest = hashlib.sha256()
    length = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            length += len(chunk)
    if length != size or digest.hexdigest() != sha256:
        raise MaterialiseError(
            f"blob {sha256} read from the object store is {length} bytes with sha256 {digest.hexdigest()}, "
            f"not the {size} bytes the manifest names"
        )
    os.chmod(path, mode)
    os.utime(path, ns=(_SEAL_NS, _SEAL_NS))


def _publish(temp: Path, path: Path, size: int) -> None:
    """Put the verified blob in place unless another launcher already did: the first entry stays, so every run
    links to the same inode (a replaced entry would leave earlier runs holding a second copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            os.link(temp, path)
            return
        except FileExistsError:
            if _sealed(path, size):  # a broken entry is removed here, and the link is tried again
                return
    os.replace(temp, path)


def _reflink(source: Path, target: Path) -> bool:
    """Clone `source` to a new `target` sharing its blocks; False (and no target) where the filesystem cannot."""
    with source.open("rb") as src, target.open("xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            return True
        except OSError:
            pass
    target.unlink()
    return False
