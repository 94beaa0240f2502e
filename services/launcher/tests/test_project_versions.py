"""Reading a version from the object store: checked against its id, retried through faults, failing with a reason."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from ame import codecs, project_codecs
from ame.domain import FileLayer
from ame.domain.artifacts import Artifact, artifact_key, index_key
from ame.domain.projects import MODE_FILE, ManifestEntry, manifest_digest
from ame_launcher.content_cache import MaterialiseError
from ame_launcher.convert import ProjectSource
from ame_launcher.project_versions import VersionReader
from ame_launcher.settings import LauncherSettings
from ame_platform.storage import LocalObjectStore, StorageSettings

FILES = {"ame.yml": b"project: demo\n", "train.py": b"print('training')\n"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _stored_version(root: Path) -> tuple[str, ProjectSource]:
    store = LocalObjectStore(root)
    entries = [ManifestEntry(path=p, mode=MODE_FILE, sha256=_sha(d), size=len(d)) for p, d in FILES.items()]
    version = manifest_digest(entries)
    for data in FILES.values():
        await store.put_bytes(f"orgs/default/blobs/{_sha(data)[:2]}/{_sha(data)}", data)
    await store.put_bytes(f"orgs/default/manifests/{version}", project_codecs.manifest_object(version, entries))
    return version, ProjectSource(f"orgs/default/manifests/{version}", "orgs/default/blobs/")


def _reader(tmp_path: Path, objects: Path, **overrides: object) -> VersionReader:
    fields: dict[str, object] = {"fetch_backoff": 0.01, **overrides}
    settings = LauncherSettings(
        work_dir=tmp_path / "launcher",
        storage=StorageSettings(local_root=objects),
        **fields,  # type: ignore[arg-type]
    )
    return VersionReader(settings)


class _Flaky:
    """The real local store, whose first `failures` blob reads fail as a dropped connection would."""

    def __init__(self, store: LocalObjectStore, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.calls = 0

    async def get_bytes(self, key: str) -> bytes:
        return await self._store.get_bytes(key)

    async def get_file(self, key: str, dest: Path) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionResetError("connection reset by peer")
        await self._store.get_file(key, dest)


async def test_a_version_is_materialised_and_checked_against_its_id(tmp_path: Path) -> None:
    version, source = await _stored_version(tmp_path / "objects")
    reader = _reader(tmp_path, tmp_path / "objects")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    placed = await reader.materialise(version, source, run_dir)
    assert placed.fetched == 2
    assert (run_dir / "train.py").read_bytes() == FILES["train.py"]
    other = "0" * 64
    with pytest.raises(MaterialiseError, match=f"is not version {other}"):
        await reader.materialise(other, source, tmp_path / "elsewhere")
    await reader.close()


async def test_store_faults_are_retried(tmp_path: Path) -> None:
    version, source = await _stored_version(tmp_path / "objects")
    reader = _reader(tmp_path, tmp_path / "objects", fetch_attempts=3)
    flaky = _Flaky(LocalObjectStore(tmp_path / "objects"), failures=2)
    reader._store = flaky  # type: ignore[assignment]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    await reader.materialise(version, source, run_dir)
    assert (run_dir / "ame.yml").read_bytes() == FILES["ame.yml"]
    assert flaky.calls == 4  # two failures, then the two blobs


async def test_a_store_that_stays_away_fails_the_run_with_a_reason_not_a_hang(tmp_path: Path) -> None:
    version, source = await _stored_version(tmp_path / "objects")
    reader = _reader(tmp_path, tmp_path / "objects", fetch_attempts=3)
    reader._store = _Flaky(LocalObjectStore(tmp_path / "objects"), failures=1000)  # type: ignore[assignment]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = time.monotonic()
    with pytest.raises(MaterialiseError, match=r"could not read blob [0-9a-f]{64} from the object store after 3 tries"):
        await reader.materialise(version, source, run_dir)
    assert time.monotonic() - started < 5


async def test_a_missing_manifest_fails_at_once(tmp_path: Path) -> None:
    reader = _reader(tmp_path, tmp_path / "objects", fetch_attempts=5, fetch_backoff=10.0)
    started = time.monotonic()
    with pytest.raises(MaterialiseError, match="is not in the object store"):
        await reader.materialise("1" * 64, ProjectSource("orgs/default/manifests/x", "orgs/default/blobs/"), tmp_path)
    assert time.monotonic() - started < 5


async def _stored_layer(root: Path, run_id: str, files: dict[str, bytes]) -> FileLayer:
    store = LocalObjectStore(root)
    saved = [Artifact(path=p, size=len(d), sha256=_sha(d), attempt=1) for p, d in files.items()]
    for path, data in files.items():
        await store.put_bytes(artifact_key("default", run_id, 1, path), data)
    await store.put_bytes(index_key("default", run_id, 1), codecs.artifact_index_to_bytes(run_id, 1, saved))
    return FileLayer(run_id=run_id, attempt=1)


async def test_layers_lie_over_the_version_in_order_a_later_one_winning_a_path(tmp_path: Path) -> None:
    """The list both backends place for a pipeline step (the local one through its cache, a pod by URL)."""
    objects = tmp_path / "objects"
    version, source = await _stored_version(objects)
    first = await _stored_layer(objects, "r1", {"train.py": b"first", "out/a": b"a", "out/b": b"b", "keep": b"k"})
    second = await _stored_layer(objects, "r2", {"train.py": b"second", "out": b"a file now", "keep/x": b"x"})
    reader = _reader(tmp_path, objects)
    files = await reader.layered_files(version, source, "default", [first, second])
    manifest = _sha(FILES["ame.yml"])
    assert {entry.path: (entry.sha256, key) for entry, key in files} == {
        "ame.yml": (manifest, f"orgs/default/blobs/{manifest[:2]}/{manifest}"),
        "train.py": (_sha(b"second"), artifact_key("default", "r2", 1, "train.py")),
        "out": (_sha(b"a file now"), artifact_key("default", "r2", 1, "out")),
        "keep/x": (_sha(b"x"), artifact_key("default", "r2", 1, "keep/x")),
    }
    with pytest.raises(MaterialiseError, match="saved files of earlier step run r3"):
        await reader.layered_files(version, source, "default", [first, FileLayer(run_id="r3", attempt=1)])
    await reader.close()
