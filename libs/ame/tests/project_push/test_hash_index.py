"""The local hash index: an unchanged file is never hashed twice, a changed one always is."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ame.packaging import HashIndex, scan_project


def digests(root: Path, cache: Path, margin_ns: int) -> tuple[dict[str, str], HashIndex]:
    index = HashIndex.for_project(root, cache, racy_margin_ns=margin_ns)
    found = index.digests(scan_project(root).files)
    index.save()
    return found, index


def test_unchanged_files_come_from_the_index_and_changed_ones_are_rehashed(tmp_path: Path) -> None:
    root, cache = tmp_path / "p", tmp_path / "cache"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}.txt").write_text(f"content {i}")
    first, index = digests(root, cache, 0)
    assert index.hashed_files == 20
    assert first["f3.txt"] == hashlib.sha256(b"content 3").hexdigest()
    again, index = digests(root, cache, 0)
    assert (index.hashed_files, again) == (0, first)
    # Same size, new content: mtime and ctime move, so it is hashed again.
    (root / "f3.txt").write_text("content X")
    changed, index = digests(root, cache, 0)
    assert index.hashed_files == 1
    assert changed["f3.txt"] == hashlib.sha256(b"content X").hexdigest()
    (root / "f4.txt").unlink()
    (root / "new.txt").write_text("new")
    fewer, index = digests(root, cache, 0)
    assert "f4.txt" not in fewer
    assert index.hashed_files == 1


def test_a_file_changed_just_before_hashing_is_not_trusted_next_time(tmp_path: Path) -> None:
    # Two writes within the filesystem's timestamp granularity leave the same mtime; the index must not keep a
    # hash it cannot tell apart from a later one.
    root, cache = tmp_path / "p", tmp_path / "cache"
    root.mkdir()
    (root / "fresh.txt").write_text("one")
    digests(root, cache, 10**12)
    _, index = digests(root, cache, 10**12)
    assert index.hashed_files == 1


def test_a_damaged_index_is_ignored(tmp_path: Path) -> None:
    root, cache = tmp_path / "p", tmp_path / "cache"
    root.mkdir()
    (root / "a.txt").write_text("a")
    _, index = digests(root, cache, 0)
    index.path.write_text("{not json")
    found, index = digests(root, cache, 0)
    assert found["a.txt"] == hashlib.sha256(b"a").hexdigest()
    assert index.hashed_files == 1
