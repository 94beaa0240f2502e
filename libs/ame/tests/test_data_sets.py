"""A data set's definition hash: the same across changes elsewhere in the project, new when its task changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame.data_sets import check_data_set_path, definitions_of, production_key, scan_output
from ame.spec import SpecError, load_project_text

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
