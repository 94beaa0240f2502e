"""The local artifact store and change detection with .ameignore."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame.runner.artifacts import (
    changed_files,
    explicit_files,
    load_ignore_rules,
    snapshot_files,
    storable_names,
)
from ame.storage import InvalidKeyError, LocalObjectStore


async def test_local_store_put_list_get(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "artifacts")
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    await store.put_file("p/t/run1/out/model.bin", source)
    await store.put_file("p/t/run2/other.txt", source)
    listed = await store.list("p/t/run1/")
    assert [(info.key, info.size) for info in listed] == [("p/t/run1/out/model.bin", 7)]
    await store.get_file("p/t/run1/out/model.bin", tmp_path / "dl" / "model.bin")
    assert (tmp_path / "dl" / "model.bin").read_bytes() == b"weights"
    with pytest.raises(InvalidKeyError):
        await store.put_file("../escape", source)


def test_snapshot_diff_honours_ameignore_git_and_venvs(tmp_path: Path) -> None:
    (tmp_path / ".ameignore").write_text("# comment\n*.log\ndata/raw/\n!keep.log\n")
    (tmp_path / "a.txt").write_text("a")
    rules = load_ignore_rules(tmp_path)
    before = snapshot_files(tmp_path, rules)
    (tmp_path / "a.txt").write_text("changed")
    (tmp_path / "new.txt").write_text("n")
    (tmp_path / "debug.log").write_text("x")
    (tmp_path / "keep.log").write_text("x")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "big.csv").write_text("x")
    (tmp_path / "data" / "clean.csv").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_text("x")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.pyc").write_text("x")
    after = snapshot_files(tmp_path, rules)
    assert changed_files(before, after) == ["a.txt", "data/clean.csv", "keep.log", "new.txt"]


def test_explicit_paths_files_dirs_and_globs(tmp_path: Path) -> None:
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub" / "m.bin").write_text("x")
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "r1.csv").write_text("x")
    (tmp_path / "r2.csv").write_text("x")
    files, unmatched = explicit_files(tmp_path, ["out", "metrics.json", "*.csv", "missing"])
    assert files == ["metrics.json", "out/sub/m.bin", "r1.csv", "r2.csv"]
    assert unmatched == ["missing"]


def test_names_the_object_store_cannot_key_are_set_apart() -> None:
    assert storable_names(["a.txt", "dir/b.bin", "odd\\name", "bell\x07", "x.ame-partial"]) == (
        ["a.txt", "dir/b.bin"],
        ["odd\\name", "bell\x07", "x.ame-partial"],
    )
