"""Project versions: a manifest of files (path, mode, sha256, size) whose content hash is the version id.

The CLI and the api share these rules, so a manifest the CLI builds is one the server accepts, and both compute
the same version id for the same tree.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ame.domain.runs import check_text

# Git's file modes: a regular file, an executable one, a symbolic link (its blob is the link's target text).
MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODES = frozenset({MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK})
MAX_PATH_BYTES = 4096
MAX_SYMLINK_TARGET_BYTES = 4096
PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ManifestError(ValueError):
    """A manifest the server must refuse (an escaping path, a duplicate, a bad hash)."""


def check_path(path: str) -> str:
    """Return `path` if it is a relative POSIX path that stays inside the project, else raise ManifestError."""
    if not path:
        raise ManifestError("a manifest path cannot be empty")
    try:
        check_text(path, "a manifest path")
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise ManifestError(f"path {path[:80]!r}... is longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(path) or "\\" in path:
        raise ManifestError(f"path {path!r} contains a control character or a backslash")
    if path.startswith("/"):
        raise ManifestError(f"path {path!r} is absolute; manifest paths are relative to the project")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ManifestError(f"path {path!r} escapes the project or has an empty, '.' or '..' segment")
    return path


def check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ManifestError(f"{value[:80]!r} is not a sha256 digest (64 lowercase hex digits)")
    return value


def symlink_escapes(link_path: str, target: str) -> bool:
    """Whether a link at `link_path` (project-relative) pointing at `target` resolves outside the project."""
    if not target or target.startswith("/") or "\x00" in target:
        return True
    depth = len(link_path.split("/")) - 1  # directories above the link, inside the project
    for segment in target.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                return True
        elif segment not in ("", "."):
            depth += 1
    return False


class ManifestEntry(BaseModel):
    """One file of a project version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="POSIX path relative to the project root.", max_length=MAX_PATH_BYTES)
    mode: int = Field(MODE_FILE, description="0o100644 file, 0o100755 executable, 0o120000 symlink.")
    sha256: str = Field(min_length=64, max_length=64, description="Hex sha256 of the file's bytes.")
    size: int = Field(ge=0, description="Size in bytes.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: int) -> int:
        if value not in MODES:
            raise ManifestError(f"mode {value:o} is not one of 100644, 100755, 120000")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        return check_sha256(value)


def check_manifest(entries: Sequence[ManifestEntry]) -> None:
    """Refuse duplicates and a path that is both a file and a directory (`a` and `a/b`)."""
    paths = sorted(entry.path for entry in entries)
    for before, after in itertools.pairwise(paths):
        if before == after:
            raise ManifestError(f"path {before!r} appears twice in the manifest")
    directories = {path.rsplit("/", 1)[0] for path in paths if "/" in path}
    parents: set[str] = set()
    for directory in directories:
        parts = directory.split("/")
        parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    clash = parents.intersection(paths)
    if clash:
        raise ManifestError(f"path {sorted(clash)[0]!r} is both a file and a directory in the manifest")


def manifest_digest(entries: Iterable[ManifestEntry]) -> str:
    """The version id: sha256 over `<mode octal> <sha256> <size> <path>\\n`, entries in path order (UTF-8 bytes).

    Paths never hold a newline (check_path refuses control characters), so the encoding is unambiguous.
    """
    return digest_rows((e.path, e.mode, e.sha256, e.size) for e in entries)


def digest_rows(rows: Iterable[tuple[str, int, str, int]]) -> str:
    """`manifest_digest` over plain (path, mode, sha256, size) rows, for callers that have not validated them."""
    digest = hashlib.sha256()
    for path, mode, sha256, size in sorted(rows, key=lambda row: row[0].encode("utf-8")):
        digest.update(f"{mode:o} {sha256} {size} {path}\n".encode())
    return digest.hexdigest()


class ProjectVersion(BaseModel):
    """A committed version; `id` is the manifest's digest."""

    model_config = ConfigDict(frozen=True)

    id: str
    project: str
    organisation: str
    file_count: int
    size_bytes: int
    created_at: datetime
    git_commit: str = ""  # the short commit hash a git project source synced it from; empty for a push
    # Templates from other projects: project name -> the version of it this version was resolved against.
    template_pins: dict[str, str] = Field(default_factory=dict)


class VersionManifest(BaseModel):
    version: ProjectVersion
    files: list[ManifestEntry]
