"""A producing run's output stored as a data set version, and placed into consumers' directories by hard link."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from ame.content_cache import MaterialiseError
from ame_launcher.convert import DataSetOutput, DataSetSource
from ame_launcher.data_sets import DataSetStoreError, materialise_data_sets, store_data_set_output
from ame_launcher.project_versions import VersionReader
from ame_launcher.settings import LauncherSettings
from ame_platform.storage import LocalObjectStore, StorageSettings

pytestmark = pytest.mark.asyncio


def _settings(tmp_path: Path, objects: Path) -> LauncherSettings:
    return LauncherSettings(
        work_dir=tmp_path / "launcher",
        storage=StorageSettings(local_root=objects),
        fetch_backoff=0.01,
    )


def _output() -> DataSetOutput:
    return DataSetOutput(
        name="corpus",
        path="data/corpus",
        blob_prefix="orgs/default/data-set-blobs/",
        manifest_prefix="orgs/default/data-set-manifests/",
        result_key="orgs/default/data-sets/1/result",
    )


async def test_a_stored_version_is_placed_by_hard_link_in_every_run(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    store = LocalObjectStore(objects)
    producer = tmp_path / "producer"
    (producer / "data/corpus/sub").mkdir(parents=True)
    (producer / "data/corpus/words.txt").write_text("alpha\n")
    (producer / "data/corpus/sub/run.sh").write_text("#!/bin/sh\n")
    os.chmod(producer / "data/corpus/sub/run.sh", 0o755)
    settings = _settings(tmp_path, objects)

    version_id, files, size = await store_data_set_output(store, settings, _output(), producer)
    assert (files, size) == (2, len("alpha\n") + len("#!/bin/sh\n"))
    assert (await store.get_bytes(_output().result_key)).decode() == version_id

    reader = VersionReader(settings)
    source = DataSetSource(
        "corpus",
        "data/corpus",
        version_id,
        f"orgs/default/data-set-manifests/{version_id[:2]}/{version_id}",
        "orgs/default/data-set-blobs/",
    )
    runs = [tmp_path / "run1", tmp_path / "run2"]
    for run in runs:
        (run / "data/corpus").mkdir(parents=True)
        (run / "data/corpus/words.txt").write_text("a stale copy in the project\n")
        (run / "data/corpus/own.txt").write_text("not the data set's\n")
    first = await materialise_data_sets(reader, [source], runs[0])
    second = await materialise_data_sets(reader, [source], runs[1])
    assert (first.fetched, first.linked, second.fetched, second.linked) == (2, 2, 0, 2)
    sha = hashlib.sha256(b"alpha\n").hexdigest()
    cached = reader.cache.blob_path(sha)
    inodes = {(run / "data/corpus/words.txt").stat().st_ino for run in runs}
    assert inodes == {cached.stat().st_ino}
    assert (runs[0] / "data/corpus/words.txt").read_text() == "alpha\n"
    assert os.access(runs[1] / "data/corpus/sub/run.sh", os.X_OK)
    assert (runs[1] / "data/corpus/own.txt").read_text() == "not the data set's\n"
    await reader.close()


async def test_nothing_at_the_path_or_a_path_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    store = LocalObjectStore(objects)
    settings = _settings(tmp_path, objects)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSetStoreError, match="left nothing at the data set's path 'data/corpus'"):
        await store_data_set_output(store, settings, _output(), tmp_path / "empty")
    reader = VersionReader(settings)
    escaping = DataSetSource("x", "../elsewhere", "0" * 64, "k", "p/")
    with pytest.raises(MaterialiseError, match="must be relative to the project directory"):
        await materialise_data_sets(reader, [escaping], tmp_path / "empty")
    missing = DataSetSource("x", "data", "0" * 64, "orgs/default/data-set-manifests/00/none", "p/")
    with pytest.raises(MaterialiseError, match="is not in the object store"):
        await materialise_data_sets(reader, [missing], tmp_path / "empty")
    await reader.close()


async def test_output_over_the_declared_size_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    (tmp_path / "run" / "data" / "corpus").mkdir(parents=True)
    (tmp_path / "run" / "data" / "corpus" / "a.bin").write_bytes(b"a" * 1500)
    store, settings = LocalObjectStore(objects), _settings(tmp_path, objects)
    limited = dataclasses.replace(_output(), max_bytes=1000)
    with pytest.raises(DataSetStoreError, match=r"^data set 'corpus' is 1\.5k, over its declared size 1k$"):
        await store_data_set_output(store, settings, limited, tmp_path / "run")
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))
    _, files, size = await store_data_set_output(
        store, settings, dataclasses.replace(limited, max_bytes=1500), tmp_path / "run"
    )
    assert (files, size) == (1, 1500)
