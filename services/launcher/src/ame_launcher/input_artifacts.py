"""A run's input artifacts: the artifacts of another run of its organisation (`RunSpec.input_run_id`), placed in
its working directory after the project version and before the command starts. A model's validation run gets its
training run's this way.

The artifacts are read as the api lists them: from the run's artifact indexes (each path's latest attempt), so only
whole artifacts are placed; each file is checked against its sha256. The keys are under the launching run's own
organisation, so a run can never name another organisation's artifacts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from ame import codecs
from ame.domain.artifacts import Artifact, artifact_key, index_attempt, index_prefix, latest_by_path
from ame.storage import ObjectNotFound, ObjectStore
from ame_launcher.settings import LauncherSettings
from ame_launcher.store_retries import retrying


class InputArtifactsError(Exception):
    """The input artifacts could not be placed; the run fails with this reason."""


def _missing(exc: Exception) -> Exception | None:
    return InputArtifactsError(str(exc)) if isinstance(exc, ObjectNotFound) else None


def _gave_up(what: str) -> Callable[[int, str], Exception]:
    def make(tries: int, detail: str) -> Exception:
        return InputArtifactsError(f"could not read {what} from the object store after {tries} tries: {detail}")

    return make


async def place_run_artifacts(
    open_store: Callable[[], Awaitable[ObjectStore]],
    settings: LauncherSettings,
    organisation: str,
    run_id: str,
    workdir: Path,
) -> int:
    """Place the run's artifacts (each path's latest attempt) under `workdir`; returns how many."""
    store = await open_store()
    found: list[Artifact] = []
    infos = await retrying(
        settings,
        lambda: store.list(index_prefix(organisation, run_id)),
        what=f"the artifact indexes of run {run_id}",
        gave_up=_gave_up(f"the artifact indexes of run {run_id}"),
    )
    for info in infos:
        if index_attempt(info.key) is None:
            continue
        data = await retrying(
            settings,
            functools.partial(store.get_bytes, info.key),
            what=f"artifact index {info.key}",
            gave_up=_gave_up(f"artifact index {info.key}"),
            permanent=_missing,
        )
        found.extend(codecs.artifact_index_from_bytes(data))
    root = await asyncio.to_thread(workdir.resolve)
    latest = latest_by_path(found)
    for artifact in latest.values():
        target = root / artifact.path
        await asyncio.to_thread(_prepare, root, target)
        key = artifact_key(organisation, run_id, artifact.attempt, artifact.path)
        await retrying(
            settings,
            functools.partial(store.get_file, key, target),
            what=f"artifact {artifact.path} of run {run_id}",
            gave_up=_gave_up(f"artifact {artifact.path!r} of run {run_id}"),
            permanent=_missing,
        )
        if await asyncio.to_thread(_sha256, target) != artifact.sha256:
            raise InputArtifactsError(f"artifact {artifact.path!r} of run {run_id} does not match its sha256")
    return len(latest)


def _prepare(root: Path, target: Path) -> None:
    """Make room for `target`: its directories inside `root` (never through a link out of it), no file in its way
    (a project file may be a read-only hard link into the launcher's cache: replaced, never written through)."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not parent.resolve().is_relative_to(root):
        raise InputArtifactsError(f"{target.relative_to(root)}: a directory on the way leads out of the run")
    if target.is_symlink() or target.is_file():
        target.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
