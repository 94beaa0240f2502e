"""A data set's definition hash: the same across changes elsewhere in the project, new when its task changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ame.data_sets import (
    DataSetDefinition,
    check_data_set_path,
    check_data_set_size,
    definitions_of,
    production_key,
    scan_output,
)
from ame.domain.projects import MODE_FILE, ManifestEntry
from ame.local_data_sets import DataSetError, LocalDataSets
from ame.runner.home import AmeHome
from ame.spec import SpecError, load_project_text, templates_from

BASE = """\
project: demo
dataSets:
  - name: corpus
    path: ./data/corpus/
    taskRef: fetch
tasks:
  - name: fetch
    executor: !custom
      command: python fetch.py
  - name: train
    executor: !custom
      command: python train.py
    dataSets: [corpus]
"""


def _hash(text: str) -> str:
    (only,) = definitions_of(load_project_text(text, "ame.yml"))
    return only.definition_hash


def test_the_hash_follows_the_producing_task_and_the_path_only() -> None:
    base = _hash(BASE)
    assert _hash(BASE.replace("python train.py", "python train.py --epochs 3")) == base
    assert _hash(BASE.replace("python fetch.py", "python fetch.py --all")) != base
    assert _hash(BASE.replace("./data/corpus/", "data/other")) != base
    (definition,) = definitions_of(load_project_text(BASE, "ame.yml"))
    assert definition.path == "data/corpus" and definition.producer.name == "fetch"


def test_paths_stay_inside_the_directory() -> None:
    assert check_data_set_path("./a//b/") == "a/b"
    for bad in ("../up", "/abs", "", "."):
        with pytest.raises(ValueError, match="relative to the project directory"):
            check_data_set_path(bad)
    with pytest.raises(SpecError, match="must be relative"):
        definitions_of(load_project_text(BASE.replace("./data/corpus/", "../outside"), "ame.yml"))


def test_the_idempotency_key_names_the_definition_and_the_generation() -> None:
    assert production_key("default", "demo", "corpus", "ab", 1) == "dataset:default:demo:corpus:ab"
    assert production_key("default", "demo", "corpus", "ab", 2) == "dataset:default:demo:corpus:ab:2"


def test_an_output_directory_scans_to_sorted_entries_without_symlinks(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("x")
    (tmp_path / "a.txt").write_text("aa")
    (tmp_path / "link").symlink_to("a.txt")
    assert [(e.path, e.size) for e in scan_output(tmp_path)] == [("a.txt", 2), ("b/x.txt", 1)]
    assert scan_output(tmp_path / "absent") == []


def test_a_producer_that_reads_its_own_data_set_is_refused_where_it_reads_it() -> None:
    text = BASE.replace(
        "    taskRef: fetch\n",
        "    task:\n      name: loop\n      executor: !custom\n        command: x\n      dataSets: [corpus]\n",
    )
    with pytest.raises(SpecError, match=r"ame\.yml:9:\d+: data set 'corpus' is read by its own producing task"):
        definitions_of(load_project_text(text, "ame.yml"))


def test_a_producer_may_be_built_on_another_projects_template(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ame.yml").write_text(
        "project: shared\ntemplates:\n  - name: fetcher\n    executor: !custom\n      command: python fetch.py\n"
    )
    text = (
        "project: demo\ndataSets:\n  - name: corpus\n    path: data\n    task:\n      name: fetch\n"
        "      fromTemplate: shared.fetcher\n"
    )
    project = load_project_text(text, "ame.yml", external_templates=templates_from([shared]))
    with pytest.raises(SpecError):
        definitions_of(project)  # without the other project its template is unknown
    (definition,) = definitions_of(project, external_templates=templates_from([shared]))
    assert definition.producer.name == "fetch" and "python fetch.py" in str(definition.producer.executor)


def test_an_interrupted_local_production_is_produced_again(tmp_path: Path) -> None:
    (definition,) = definitions_of(load_project_text(BASE, "ame.yml"))
    local = LocalDataSets(AmeHome(tmp_path / "home"))
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    runs: list[str] = []

    async def interrupted(_: DataSetDefinition) -> tuple[str, bool, str]:
        runs.append("interrupted")
        raise KeyboardInterrupt  # Ctrl-C: the process ends before the production records an end

    async def produce(_: DataSetDefinition) -> tuple[str, bool, str]:
        runs.append("produced")
        (project_dir / "data" / "corpus").mkdir(parents=True)
        (project_dir / "data" / "corpus" / "a.txt").write_text("a")
        return "run-2", True, ""

    async def notice(_: str) -> None:
        pass

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(local.prepare("demo", definition, project_dir, interrupted, notice))
    assert [s.status for s in local.summaries("demo")] == ["running"]
    summary = asyncio.run(local.prepare("demo", definition, project_dir, produce, notice))
    assert (summary.status, summary.run_id, summary.file_count, runs) == (
        "ready",
        "run-2",
        1,
        ["interrupted", "produced"],
    )


def test_a_local_production_over_its_declared_size_fails_and_stores_nothing(tmp_path: Path) -> None:
    sized = BASE.replace("taskRef: fetch\n", "taskRef: fetch\n    size: 1Ki\n")
    (definition,) = definitions_of(load_project_text(sized, "ame.yml"))
    # The limit is not the definition: changing it produces nothing again.
    assert (definition.max_bytes, definition.definition_hash) == (1024, _hash(BASE))
    with pytest.raises(SpecError, match="more than 0 bytes"):
        load_project_text(sized.replace("size: 1Ki", "size: 0"), "ame.yml")
    local = LocalDataSets(AmeHome(tmp_path / "home"))
    project_dir = tmp_path / "project"

    async def produce(_: DataSetDefinition) -> tuple[str, bool, str]:
        (project_dir / "data" / "corpus").mkdir(parents=True)
        (project_dir / "data" / "corpus" / "a.bin").write_bytes(b"a" * 2000)
        return "run-1", True, ""

    async def notice(_: str) -> None:
        pass

    over = r"^data set 'corpus' failed: data set 'corpus' is 2\.0Ki, over its declared size 1Ki$"
    with pytest.raises(DataSetError, match=over):
        asyncio.run(local.prepare("demo", definition, project_dir, produce, notice))
    (summary,) = local.summaries("demo")
    assert (summary.status, summary.version_id) == ("failed", "")
    # Nothing of it was stored: no manifest, and no blob in the cache.
    assert not (local.root / "manifests").exists() or not list((local.root / "manifests").iterdir())
    assert not [f for f in (local.root / "cache").rglob("*") if f.is_file()]


def test_the_size_message_uses_the_declared_unit() -> None:
    def files(total: int) -> list[ManifestEntry]:
        return [ManifestEntry(path="f", mode=MODE_FILE, sha256="0" * 64, size=total)]

    def message(total: int, declared: int) -> str:
        with pytest.raises(ValueError, match="over its declared size") as over:
            check_data_set_size("mnist", files(total), declared)
        return str(over.value)

    assert message(12 * 2**30, 10 * 2**30) == "data set 'mnist' is 12Gi, over its declared size 10Gi"
    assert message(10 * 2**30 + 1, 10 * 2**30) == "data set 'mnist' is 10.1Gi, over its declared size 10Gi"
    assert message(12_345_678_901, 10**10) == "data set 'mnist' is 12.4G, over its declared size 10G"
    assert message(1001, 999) == "data set 'mnist' is 1001 bytes, over its declared size 999 bytes"
    check_data_set_size("mnist", files(2**30), 2**30)  # at the limit: fine
    check_data_set_size("mnist", files(2**40), None)
