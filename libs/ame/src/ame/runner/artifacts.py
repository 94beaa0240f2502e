"""Saving a run's artifacts: what to save, and saving it through the object-store port (`ame.storage`).

Local runs keep them in a `LocalObjectStore` under `<AME_HOME>/artifacts`, keyed
`<project>/<task>/<run_id>/<path relative to the project>`; the launcher hands the runner a store that puts them
in the service object store per run and attempt instead (see `ame.domain.artifacts`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pathspec

from ame.storage import InvalidKeyError, ObjectStore, validate_key

__all__ = [
    "FileSnapshot",
    "artifact_prefix",
    "changed_files",
    "explicit_files",
    "load_ignore_rules",
    "save_artifacts",
    "snapshot_files",
    "storable_names",
]

# Never artifacts: VCS data and bytecode the run itself produces by importing modules.
_ALWAYS_IGNORED = (".git/", "__pycache__/", ".ame/")
IGNORE_FILE = ".ameignore"


def artifact_prefix(project: str, task: str, run_id: str) -> str:
    return f"{project}/{task}/{run_id}/"


FileSnapshot = Mapping[str, tuple[int, int]]


def load_ignore_rules(project_dir: Path, extra: tuple[str, ...] = ()) -> pathspec.GitIgnoreSpec:
    """`.ameignore` (gitignore syntax) plus the directories that are never artifacts."""
    lines = [*_ALWAYS_IGNORED, *extra]
    ignore_file = project_dir / IGNORE_FILE
    if ignore_file.is_file():
        lines.extend(ignore_file.read_text().splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines)


def snapshot_files(
    project_dir: Path, ignore: pathspec.GitIgnoreSpec, skip: tuple[Path, ...] = ()
) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under the project that could be an artifact."""
    snapshot: dict[str, tuple[int, int]] = {}
    for path in _walk_files(project_dir, skip=skip, ignore=ignore, root=project_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        snapshot[path.relative_to(project_dir).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


def changed_files(before: FileSnapshot, after: FileSnapshot) -> list[str]:
    return sorted(name for name, state in after.items() if before.get(name) != state)


def explicit_files(project_dir: Path, patterns: list[str], skip: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """Files named by `artifacts.paths` (files, directories, globs), and the patterns matching none."""
    files: set[str] = set()
    unmatched: list[str] = []
    never = pathspec.GitIgnoreSpec.from_lines(_ALWAYS_IGNORED)
    for pattern in patterns:
        matches = sorted(project_dir.glob(pattern)) if _is_glob(pattern) else [project_dir / pattern]
        found = False
        for match in matches:
            if match.is_file():
                files.add(match.relative_to(project_dir).as_posix())
                found = True
            elif match.is_dir():
                for path in _walk_files(match, skip=skip, ignore=never, root=project_dir):
                    files.add(path.relative_to(project_dir).as_posix())
                    found = True
        if not found:
            unmatched.append(pattern)
    return sorted(files), unmatched


def storable_names(files: list[str]) -> tuple[list[str], list[str]]:
    """`files` split into those the object store can key and those it cannot (a backslash, a control character,
    the store's reserved partial suffix), so one odd name does not lose a run's other artifacts."""
    good: list[str] = []
    bad: list[str] = []
    for name in files:
        try:
            validate_key(name)
        except InvalidKeyError:
            bad.append(name)
        else:
            good.append(name)
    return good, bad


async def save_artifacts(store: ObjectStore, project_dir: Path, prefix: str, files: list[str]) -> list[str]:
    """Upload each file under `prefix`; return the keys written."""
    keys: list[str] = []
    for name in files:
        key = prefix + name
        await store.put_file(key, project_dir / name)
        keys.append(key)
    return keys


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _walk_files(
    directory: Path,
    *,
    skip: tuple[Path, ...] = (),
    ignore: pathspec.GitIgnoreSpec | None = None,
    root: Path | None = None,
) -> Iterator[Path]:
    base = root or directory
    skipped = {path.resolve() for path in skip}
    for current, dirs, files in os.walk(directory):
        current_path = Path(current)
        kept = []
        for name in dirs:
            child = current_path / name
            relative = child.relative_to(base).as_posix() + "/"
            # A directory holding pyvenv.cfg is a virtual environment: never an artifact.
            if (child / "pyvenv.cfg").exists() or child.resolve() in skipped:
                continue
            if ignore is not None and ignore.match_file(relative):
                continue
            kept.append(name)
        dirs[:] = kept
        for name in files:
            path = current_path / name
            if path.is_symlink() and not path.exists():
                continue
            if ignore is not None and ignore.match_file(path.relative_to(base).as_posix()):
                continue
            yield path
