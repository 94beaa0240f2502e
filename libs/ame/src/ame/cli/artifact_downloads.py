"""Bringing a remote run's artifacts into a directory, without ever overwriting a local edit.

Each artifact is streamed into a partial file beside its target, checked against its sha256 and size, and renamed
into place, so an interrupted download leaves the old file whole. When `protect` says so (a remote `ame task run`
bringing artifacts back into the project it pushed), a local file that changed since the push is kept: the
artifact is saved beside it as `<name>.ame-<run id, 8 characters>` and reported. "Changed since the push" is:
a file of the pushed version whose bytes no longer match the version's manifest, or a file the version did not
hold (an ignored output, say) modified after the push began.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ame.domain.artifacts import Artifact, ArtifactPathError, check_artifact_path, latest_by_path
from ame.packaging.push import PushProgress

_PARTIAL = ".ame-partial"
_HASH_CHUNK = 1024 * 1024


class DownloadError(Exception):
    """An artifact could not be written (bad bytes from the server, a path that would leave the directory)."""


@dataclass(frozen=True)
class Protection:
    """What `ame task run` knows about the push: the manifest's sha256 per path (read on demand), and when the
    push began (epoch seconds)."""

    manifest: Callable[[], dict[str, str]]
    pushed_at: float


@dataclass
class DownloadReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # (the local file kept, where the artifact was saved instead)
    kept_local: list[tuple[str, str]] = field(default_factory=list)


def select(artifacts: Iterable[Artifact], wanted: Iterable[str] = ()) -> list[Artifact]:
    """The latest attempt's artifact per path, only those under the `wanted` paths (files or directories)."""
    latest = latest_by_path(artifacts)
    prefixes = [w.strip("/") for w in wanted if w.strip("/")]
    chosen = [
        a
        for path, a in sorted(latest.items())
        if not prefixes or any(path == p or path.startswith(p + "/") for p in prefixes)
    ]
    return chosen


def download(
    artifacts: list[Artifact],
    fetch: Callable[[Artifact], Iterator[bytes]],
    dest: Path,
    *,
    run_id: str,
    protect: Protection | None = None,
    progress_stream: TextIO | None = None,
) -> DownloadReport:
    """Write each artifact under `dest`; see the module's docstring for what is kept."""
    report = DownloadReport()
    root = dest.resolve()
    manifest: dict[str, str] | None = None
    progress = PushProgress(len(artifacts), sum(a.size for a in artifacts), progress_stream, verb="downloading")
    try:
        for artifact in artifacts:
            target = _target(root, artifact.path)
            if target.is_file() and not target.is_symlink() and _sha256(target) == artifact.sha256:
                report.unchanged.append(artifact.path)
                progress.advance(artifact.size, file_done=True)
                continue
            if target.exists() or target.is_symlink():
                changed = True
                if protect is not None and target.is_file() and not target.is_symlink():
                    if manifest is None:
                        manifest = protect.manifest()
                    changed = _changed_since_push(target, artifact.path, manifest, protect.pushed_at)
                elif protect is None:
                    changed = target.is_dir()  # an explicit get replaces files, never a directory
                if changed:
                    beside = target.with_name(f"{target.name}.ame-{run_id[:8]}")
                    _write(beside, artifact, fetch(artifact), progress)
                    report.kept_local.append((artifact.path, beside.relative_to(root).as_posix()))
                    continue
            _write(target, artifact, fetch(artifact), progress)
            report.written.append(artifact.path)
    finally:
        progress.close()
    return report


def _target(root: Path, path: str) -> Path:
    try:
        check_artifact_path(path)
    except ArtifactPathError as exc:
        raise DownloadError(f"refused artifact path from the server: {exc}") from None
    target = root.joinpath(*path.split("/"))
    # A directory on the way may be a symbolic link out of the destination: never write through it.
    if not target.parent.resolve().is_relative_to(root):
        raise DownloadError(f"artifact {path!r} would be written outside {root} (through a symbolic link)")
    return target


def _changed_since_push(target: Path, path: str, manifest: dict[str, str], pushed_at: float) -> bool:
    pushed = manifest.get(path)
    if pushed is not None:
        return _sha256(target) != pushed
    return target.stat().st_mtime > pushed_at


def _write(target: Path, artifact: Artifact, chunks: Iterator[bytes], progress: PushProgress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{_PARTIAL}")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.advance(len(chunk))
        if size != artifact.size or digest.hexdigest() != artifact.sha256:
            raise DownloadError(
                f"artifact {artifact.path!r} arrived with {size} bytes and sha256 {digest.hexdigest()[:12]}, "
                f"not {artifact.size} bytes and {artifact.sha256[:12]}"
            )
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    progress.advance(0, file_done=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
