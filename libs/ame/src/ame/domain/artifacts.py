"""Artifacts of remote runs: what an attempt saved, and where it lies in the object store.

The launcher writes and the api reads, so the key layout is defined here once:

    orgs/<organisation>/runs/<run_id>/artifacts/<attempt>/<path>       the bytes
    orgs/<organisation>/runs/<run_id>/artifact-indexes/<attempt>       an ArtifactIndex, written last

An attempt's artifacts are listed from its index only, so a listed artifact is whole in the store; the indexes
have a prefix of their own, so finding them never lists the files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_INDEX_KEY = re.compile(r"^orgs/[^/]+/runs/[^/]+/artifact-indexes/([0-9]{1,9})$")


class ArtifactPathError(ValueError):
    """A path that is not a plain relative POSIX path inside the project."""


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str = Field(description="POSIX path relative to the project root.")
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(description="Hex sha256 of the bytes.")
    attempt: int = Field(ge=1, description="The attempt that saved it.")


def check_artifact_path(path: str) -> str:
    """`path` if it is a plain relative path (no '..', '.', empty segment, backslash or control character)."""
    if not path or len(path.encode("utf-8")) > 900:
        raise ArtifactPathError("an artifact path must be 1-900 bytes")
    if path.startswith("/") or _CONTROL.search(path):
        raise ArtifactPathError(f"artifact path {path[:200]!r} must be relative, without control characters")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ArtifactPathError(f"artifact path {path[:200]!r} has an empty, '.' or '..' segment")
    return path


def runs_prefix(organisation: str) -> str:
    return f"orgs/{organisation}/runs/"


def run_prefix(organisation: str, run_id: str) -> str:
    """Everything the object store holds for one run (its artifacts and their indexes)."""
    return f"{runs_prefix(organisation)}{run_id}/"


def index_prefix(organisation: str, run_id: str) -> str:
    return f"{run_prefix(organisation, run_id)}artifact-indexes/"


def artifact_key(organisation: str, run_id: str, attempt: int, path: str) -> str:
    return f"{run_prefix(organisation, run_id)}artifacts/{attempt}/{check_artifact_path(path)}"


def index_key(organisation: str, run_id: str, attempt: int) -> str:
    return f"{index_prefix(organisation, run_id)}{attempt}"


def index_attempt(key: str) -> int | None:
    """The attempt an index key belongs to, or None when `key` is not an index key."""
    found = _INDEX_KEY.match(key)
    return int(found.group(1)) if found else None


def latest_by_path(artifacts: Iterable[Artifact]) -> dict[str, Artifact]:
    """Each path's artifact from the latest attempt that saved it."""
    latest: dict[str, Artifact] = {}
    for artifact in artifacts:
        kept = latest.get(artifact.path)
        if kept is None or artifact.attempt > kept.attempt:
            latest[artifact.path] = artifact
    return latest


def drop_conflicts(files: MutableMapping[str, Any], path: str) -> None:
    """Make room in `files` (keyed by path) for a file laid at `path` over them, as a pipeline step's saved file
    is laid over the files before it: it replaces what lay at its path, a file where it needs a directory, and a
    directory's files where it is a file."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        files.pop("/".join(parts[:depth]), None)
    inside = path + "/"
    for other in [p for p in files if p.startswith(inside)]:
        del files[other]
