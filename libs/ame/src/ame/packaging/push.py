"""Push a project: send the manifest, upload only the blobs the server lacks (several at once, streamed), commit.

The transport is the SDK client (gRPC); anything with the three calls of `PushTransport` works, which keeps this
module free of the wire format.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from ame.domain.projects import ManifestEntry, ProjectVersion
from ame.packaging.hash_index import HashIndex
from ame.packaging.scan import PackSettings, Scan, ScannedFile, human_bytes, scan_project
from ame.sdk.errors import MissingBlobs

CHUNK_BYTES = 1024 * 1024


class PushTransport(Protocol):
    """`commit_version` raises `ame.sdk.errors.MissingBlobs` while blobs are missing."""

    def find_missing_blobs(self, project: str, files: list[ManifestEntry]) -> list[str]: ...

    def upload_blob(self, project: str, sha256: str, size: int, chunks: Iterator[bytes]) -> object: ...

    def commit_version(self, project: str, files: list[ManifestEntry]) -> ProjectVersion: ...


@dataclass
class PushResult:
    version: ProjectVersion
    total_files: int
    total_bytes: int
    uploaded_files: int
    uploaded_bytes: int
    hashed_files: int
    escaping_links: list[str] = field(default_factory=list)
    unpackable: list[str] = field(default_factory=list)


class PushProgress:
    """A progress line on a terminal, shown only once a transfer (upload, download) has taken more than `delay` s."""

    def __init__(
        self,
        total_files: int,
        total_bytes: int,
        stream: TextIO | None = None,
        delay: float = 0.5,
        verb: str = "uploading",
    ) -> None:
        self._verb = verb
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._total_files = total_files
        self._total_bytes = total_bytes
        self._files = 0
        self._bytes = 0
        self._started = time.monotonic()
        self._delay = delay
        self._shown = False
        self._last = 0.0
        self._lock = threading.Lock()

    def advance(self, size: int, *, file_done: bool = False) -> None:
        with self._lock:
            self._bytes += size
            self._files += int(file_done)
            now = time.monotonic()
            if not self._enabled or now - self._started < self._delay or now - self._last < 0.1:
                return
            self._last = now
            self._shown = True
            share = self._bytes / self._total_bytes if self._total_bytes else 1.0
            bar = "#" * int(share * 30)
            self._stream.write(
                f"\rame: {self._verb} [{bar:<30}] {self._files}/{self._total_files} files, "
                f"{human_bytes(self._bytes)} of {human_bytes(self._total_bytes)}"
            )
            self._stream.flush()

    def close(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def build_manifest(scan: Scan, index: HashIndex | None = None) -> tuple[list[ManifestEntry], dict[str, ScannedFile]]:
    """The manifest of a scanned tree, and each sha256's file (to read it from when it must be uploaded)."""
    index = index or HashIndex(Path("/nonexistent"))
    digests = index.digests(scan.files)
    entries: list[ManifestEntry] = []
    by_sha: dict[str, ScannedFile] = {}
    for file in scan.files:
        sha = digests[file.path]
        # The scan only yields valid paths and modes and the digests are hashlib's: skip re-validating 10,000s.
        entries.append(ManifestEntry.model_construct(path=file.path, mode=file.mode, sha256=sha, size=file.size))
        by_sha.setdefault(sha, file)
    return entries, by_sha


def _chunks(file: ScannedFile, progress: PushProgress) -> Iterator[bytes]:
    if file.link_target is not None:
        data = file.link_target.encode("utf-8", errors="surrogateescape")
        progress.advance(len(data))
        yield data
        return
    with file.absolute.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            progress.advance(len(chunk))
            yield chunk


def push_project(
    root: Path,
    project: str,
    transport: PushTransport,
    *,
    cache_dir: Path,
    settings: PackSettings | None = None,
    progress_stream: TextIO | None = None,
) -> PushResult:
    """Scan, hash, upload what is missing and commit; returns the version and what was sent.

    Raises:
        ProjectTooLarge: the tree is over the client-side limits.
        Whatever the transport raises for a refused manifest, blob or commit.
    """
    settings = settings or PackSettings()
    scan = scan_project(root, settings)
    index = HashIndex.for_project(root, cache_dir)
    entries, by_sha = build_manifest(scan, index)
    # The hashes hold whatever the server answers, so a failed push re-pushes fast too.
    index.save()
    # Commit first: an unchanged project (the common re-push) is then one call. Only when blobs are missing
    # does the client ask which, upload them and commit again.
    try:
        version = transport.commit_version(project, entries)
    except MissingBlobs:
        pass
    else:
        return PushResult(
            version=version,
            total_files=len(entries),
            total_bytes=scan.total_bytes,
            uploaded_files=0,
            uploaded_bytes=0,
            hashed_files=index.hashed_files,
            escaping_links=scan.escaping_links,
            unpackable=scan.unpackable,
        )
    missing = transport.find_missing_blobs(project, entries)
    to_send = [by_sha[sha] for sha in dict.fromkeys(missing) if sha in by_sha]
    sent_bytes = sum(f.size for f in to_send)
    progress = PushProgress(len(to_send), sent_bytes, progress_stream)
    digests = {f.path: e.sha256 for f, e in zip(scan.files, entries, strict=True)}

    def upload(file: ScannedFile) -> None:
        transport.upload_blob(project, digests[file.path], file.size, _chunks(file, progress))
        progress.advance(0, file_done=True)

    try:
        if to_send:
            with ThreadPoolExecutor(max_workers=settings.upload_concurrency) as pool:
                for _ in pool.map(upload, to_send):
                    pass
    finally:
        progress.close()
    version = transport.commit_version(project, entries)
    return PushResult(
        version=version,
        total_files=len(entries),
        total_bytes=scan.total_bytes,
        uploaded_files=len(to_send),
        uploaded_bytes=sent_bytes,
        hashed_files=index.hashed_files,
        escaping_links=scan.escaping_links,
        unpackable=scan.unpackable,
    )
