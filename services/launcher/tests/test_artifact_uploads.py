"""An attempt's artifacts go to the object store under the run and attempt; store faults are retried, then fail
with a reason naming the file, never hang."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from ame import codecs
from ame.domain.artifacts import artifact_key, index_key
from ame.storage import LocalObjectStore, ObjectStore
from ame_launcher.artifact_uploads import ArtifactStoreError, AttemptArtifacts
from ame_launcher.settings import LauncherSettings
from ame_platform.storage import StorageSettings


class _Flaky(LocalObjectStore):
    """The real local store, whose first `failures` writes fail as a dropped connection would."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.writes = 0

    async def put_file(self, key: str, path: Path) -> None:
        self.writes += 1
        if self.writes <= self.failures:
            raise ConnectionResetError("connection reset by peer")
        await super().put_file(key, path)


def _uploads(tmp_path: Path, store: ObjectStore) -> AttemptArtifacts:
    settings = LauncherSettings(
        work_dir=tmp_path / "launcher",
        storage=StorageSettings(local_root=tmp_path / "objects"),
        fetch_attempts=3,
        fetch_backoff=0.01,
    )

    async def opened() -> ObjectStore:
        return store

    return AttemptArtifacts(
        opened, settings, organisation="org1", run_id="run1", attempt=2, runner_prefix="proj/train/run1/"
    )


async def test_artifacts_are_stored_under_the_attempt_with_an_index(tmp_path: Path) -> None:
    store = _Flaky(tmp_path / "objects", failures=2)
    uploads = _uploads(tmp_path, store)
    (tmp_path / "model.bin").write_bytes(b"weights" * 1000)
    await uploads.put_file("proj/train/run1/out/model.bin", tmp_path / "model.bin")
    saved = await uploads.finish()
    assert [(a.path, a.size, a.sha256, a.attempt) for a in saved] == [
        ("out/model.bin", 7000, hashlib.sha256(b"weights" * 1000).hexdigest(), 2)
    ]
    assert store.writes == 3  # two dropped connections, then the write
    assert await store.get_bytes(artifact_key("org1", "run1", 2, "out/model.bin")) == b"weights" * 1000
    assert codecs.artifact_index_from_bytes(await store.get_bytes(index_key("org1", "run1", 2))) == saved


async def test_a_store_that_stays_away_fails_with_the_files_name(tmp_path: Path) -> None:
    uploads = _uploads(tmp_path, _Flaky(tmp_path / "objects", failures=1000))
    (tmp_path / "model.bin").write_bytes(b"weights")
    started = time.monotonic()
    with pytest.raises(ArtifactStoreError, match=r"could not store artifact 'model.bin' .* after 3 tries"):
        await uploads.put_file("proj/train/run1/model.bin", tmp_path / "model.bin")
    assert time.monotonic() - started < 5
    assert await uploads.finish() == []  # nothing saved: no index, nothing listed


async def test_a_run_that_saved_nothing_writes_no_index(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    assert await _uploads(tmp_path, store).finish() == []
    assert await store.list("") == []
