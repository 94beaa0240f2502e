"""Data sets as AME runs them: a project's `dataSets:` entry is produced once by its task, and what that task leaves
at `path` becomes a stored version that every consuming task gets at the same `path`.

This module holds what the CLI (`-l`), the api and the launcher share: the definition of a data set (its path and
resolved producing task) and the hash that says when it must be produced again, the states, the idempotency key of
a production, and how a directory's files become manifest entries (content-addressed, as project versions are).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from ame.domain.projects import MODE_EXECUTABLE, MODE_FILE, ManifestEntry
from ame.domain.quantities import format_bytes
from ame.spec import ExternalTemplates, Problem, Project, ResolvedTask, SpecError, resolve_data_set_producer

__all__ = [
    "DataSetDefinition",
    "DataSetStatus",
    "check_data_set_path",
    "check_data_set_size",
    "clear_conflicts",
    "definition_hash",
    "definitions_of",
    "file_sha256",
    "production_key",
    "scan_output",
]

_HASH_CHUNK = 1024 * 1024


class DataSetStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class DataSetDefinition:
    """A data set as one version of a project declares it."""

    name: str
    path: str
    producer: ResolvedTask
    definition_hash: str
    # The declared `size:` in bytes (None: no limit). Not part of the hash: a new limit is no reason to produce again.
    max_bytes: int | None = None


def check_data_set_path(path: str) -> str:
    """The data set's `path`, normalised (no `./`, no trailing `/`); ValueError if it leaves the directory."""
    raw = path.replace("\\", "/").strip()
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or ".." in parts or not parts:
        raise ValueError(f"data set path {path!r} must be relative to the project directory and stay inside it")
    return "/".join(parts)


def check_data_set_size(name: str, entries: Iterable[ManifestEntry], max_bytes: int | None) -> None:
    """ValueError if the files of a production of data set `name` add up to more than its declared size."""
    total = sum(e.size for e in entries)
    if max_bytes is not None and total > max_bytes:
        declared = format_bytes(max_bytes)
        unit = " bytes" if declared.isdigit() else ""  # a size without a unit says it is bytes
        raise ValueError(
            f"data set '{name}' is {_size_like(total, max_bytes)}{unit}, over its declared size {declared}{unit}"
        )


def _size_like(amount: int, declared: int) -> str:
    """`amount` in the unit the declared size is written in (`12.4Gi` next to `10Gi`), rounded up so that a size
    over the limit never reads as equal to it."""
    shown = format_bytes(declared)
    unit = shown.lstrip("0123456789")
    factor = declared // int(shown[: len(shown) - len(unit)])
    if amount % factor == 0:
        return f"{amount // factor}{unit}"
    whole, tenth = divmod(-(-amount * 10 // factor), 10)  # rounded up, in whole numbers: exact for any size
    return f"{whole}.{tenth}{unit}"


def definition_hash(path: str, producer: ResolvedTask) -> str:
    """Changes when, and only when, the data set must be produced again: its path or its producing task as resolved
    (command, executor, environment, resources, ...). A push that changes other files keeps it."""
    document = json.dumps({"path": path, "task": producer.to_spec()}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def definitions_of(project: Project, *, external_templates: ExternalTemplates | None = None) -> list[DataSetDefinition]:
    """Every data set of the project that has a producing task; SpecError naming the first one that is broken.
    Templates from other projects come from `external_templates` (a producer may be built on one)."""
    out = []
    for data_set in project.data_sets:
        if data_set.task is None:
            continue
        try:
            path = check_data_set_path(data_set.path)
        except ValueError as exc:
            raise SpecError.single(str(exc), project.source_file) from None
        producer = resolve_data_set_producer(project, data_set.name, external_templates=external_templates)
        for ref in producer.data_sets:
            # Producing it would first need it: refused here, where the file can name the place.
            if ref.name == data_set.name and ref.project in (None, project.name):
                line, column = ref.source_mark() or data_set.source_mark("task") or (None, None)
                message = f"data set '{data_set.name}' is read by its own producing task (a data set cycle)"
                raise SpecError([Problem(project.source_file, line, column, message)])
        digest = definition_hash(path, producer)
        out.append(DataSetDefinition(data_set.name, path, producer, digest, max_bytes=data_set.size))
    return out


def production_key(organisation: str, project: str, name: str, digest: str, generation: int) -> str:
    """The idempotency key of one production: a second submit of it (another consumer, a replica) is the same run."""
    key = f"dataset:{organisation}:{project}:{name}:{digest}"
    return key if generation <= 1 else f"{key}:{generation}"


def scan_output(root: Path) -> list[ManifestEntry]:
    """The regular files under `root` as manifest entries (paths relative to `root`, sorted as manifests are);
    symbolic links are neither followed nor kept. An absent `root` is an empty data set."""
    return sorted(_walk(root, root), key=lambda e: e.path.encode("utf-8"))


def _walk(root: Path, directory: Path) -> Iterator[ManifestEntry]:
    try:
        children = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for child in children:
        path = Path(child.path)
        relative = PurePosixPath(path.relative_to(root)).as_posix()
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, path)
        elif stat.S_ISREG(info.st_mode):
            mode = MODE_EXECUTABLE if info.st_mode & 0o111 else MODE_FILE
            yield ManifestEntry(path=relative, mode=mode, sha256=file_sha256(path), size=info.st_size)


def clear_conflicts(dest: Path, paths: Iterable[str]) -> None:
    """Make room under `dest` for files at `paths`: whatever stands where a file or its directories go (a file
    where a directory must be, a symlink, an older file) is removed; other files are left alone."""
    for relative in paths:
        target = dest.joinpath(*relative.split("/"))
        for ancestor in reversed(target.relative_to(dest).parents[:-1] if target != dest else ()):
            place = dest / ancestor
            if place.is_symlink() or (place.exists() and not place.is_dir()):
                place.unlink()
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
