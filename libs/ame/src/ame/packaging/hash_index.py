"""A local index (path, size, mtime_ns, ctime_ns, inode -> sha256) so an unchanged file is never hashed twice.

One JSON file per project directory under `$AME_HOME/cache/push-index/`. A file whose stat matches its entry
is taken as unchanged. An entry is only written for a file last modified well before hashing began: a file
changed twice within the filesystem's timestamp granularity would otherwise keep a stale hash ("racy git").
The margin is 50 ms on filesystems with sub-second timestamps and 2 s on those with whole seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ame.packaging.scan import ScannedFile

_FORMAT = 1
# Coarser than the timestamp granularity of filesystems that keep whole seconds (FAT's is 2 s, HFS+'s 1 s).
RACY_MARGIN_NS = 2_000_000_000
# Filesystems with sub-second timestamps (ext4, xfs, btrfs, tmpfs, APFS) advance them at least every few ms.
FINE_RACY_MARGIN_NS = 50_000_000
_CHUNK = 1024 * 1024

_Key = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def default_cache_dir() -> Path:
    """`$AME_HOME/cache` (default `~/.ame/cache`), as `ame.runner.home.AmeHome` lays it out; resolved here
    so a push does not import the runner."""
    configured = os.environ.get("AME_HOME")
    return (Path(configured).expanduser() if configured else Path.home() / ".ame").absolute() / "cache"


def _key(file: ScannedFile) -> _Key:
    return (file.size, file.mtime_ns, file.ctime_ns, file.inode)


def hash_file(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def hash_scanned(file: ScannedFile) -> str:
    if file.link_target is not None:
        return hashlib.sha256(file.link_target.encode("utf-8", errors="surrogateescape")).hexdigest()
    return hash_file(file.absolute)


class HashIndex:
    def __init__(self, path: Path, *, racy_margin_ns: int | None = None) -> None:
        self.path = path
        self._racy_margin_ns = racy_margin_ns
        self._entries: dict[str, tuple[_Key, str]] = {}
        self.hashed_files = 0
        self.hashed_bytes = 0
        self._pending: dict[str, tuple[_Key, str]] | None = None

    @classmethod
    def for_project(cls, root: Path, cache_dir: Path, *, racy_margin_ns: int | None = None) -> HashIndex:
        name = hashlib.sha256(str(root.absolute()).encode("utf-8", errors="surrogateescape")).hexdigest()[:32]
        index = cls(cache_dir / "push-index" / f"{name}.json", racy_margin_ns=racy_margin_ns)
        index.load()
        return index

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # no index yet, or a damaged one: start afresh
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return
        entries = data.get("entries", {})
        if isinstance(entries, dict):
            for path, value in entries.items():
                if isinstance(value, list) and len(value) == 5:
                    self._entries[path] = ((value[0], value[1], value[2], value[3]), value[4])

    def digests(self, files: Sequence[ScannedFile], *, workers: int = 4) -> dict[str, str]:
        """path -> sha256 for every file, hashing only those whose stat changed since the index saw them."""
        started_ns = time.time_ns()
        result: dict[str, str] = {}
        stale: list[ScannedFile] = []
        for file in files:
            known = self._entries.get(file.path)
            if known is not None and known[0] == _key(file):
                result[file.path] = known[1]
            else:
                stale.append(file)
        if stale:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for file, digest in zip(stale, pool.map(hash_scanned, stale), strict=True):
                    result[file.path] = digest
                    self.hashed_files += 1
                    self.hashed_bytes += file.size
        fresh: dict[str, tuple[_Key, str]] = {}
        for file in files:
            if max(file.mtime_ns, file.ctime_ns) < started_ns - self._margin(file):
                fresh[file.path] = (_key(file), result[file.path])
        self._pending = fresh
        return result

    def _margin(self, file: ScannedFile) -> int:
        if self._racy_margin_ns is not None:
            return self._racy_margin_ns
        # A whole-second mtime means a coarse filesystem (or, rarely, a fine one that hit .000000000: harmless).
        return RACY_MARGIN_NS if file.mtime_ns % 1_000_000_000 == 0 else FINE_RACY_MARGIN_NS

    def save(self) -> None:
        """Keep the entries of the last `digests` call (files gone since are dropped)."""
        pending = self._pending
        if pending is None or pending == self._entries:
            return  # nothing new to remember: skip rewriting 10,000 entries
        self._entries = pending
        payload = {
            "format": _FORMAT,
            "entries": {path: [*key, digest] for path, (key, digest) in pending.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            partial.write_text(json.dumps(payload, separators=(",", ":")))
            os.replace(partial, self.path)
        except OSError:
            # The index only saves time; a read-only home must not fail the push.
            with contextlib.suppress(OSError):
                partial.unlink()
