"""Bringing artifacts into a directory: checked bytes, local edits kept beside, nothing written outside."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ame.cli.artifact_downloads import DownloadError, Protection, download, select
from ame.domain.artifacts import Artifact, ArtifactPathError, check_artifact_path, index_attempt, index_key

RUN_ID = "0123456789abcdef-run"


def _artifact(path: str, data: bytes, attempt: int = 1) -> Artifact:
    return Artifact(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), attempt=attempt)


def _server(contents: dict[str, bytes]) -> tuple[list[Artifact], Callable[[Artifact], Iterator[bytes]]]:
    artifacts = [_artifact(path, data) for path, data in contents.items()]

    def fetch(artifact: Artifact) -> Iterator[bytes]:
        data = contents[artifact.path]
        yield data[:3]
        yield data[3:]

    return artifacts, fetch


def test_select_takes_each_paths_latest_attempt_under_the_wanted_paths() -> None:
    listed = [
        _artifact("out/a.bin", b"1", attempt=1),
        _artifact("out/a.bin", b"2", attempt=2),
        _artifact("outside.txt", b"x"),
        _artifact("output.txt", b"y"),
    ]
    assert [(a.path, a.attempt) for a in select(listed, ["out/"])] == [("out/a.bin", 2)]
    assert [a.path for a in select(listed)] == ["out/a.bin", "output.txt", "outside.txt"]


def test_local_edits_since_the_push_are_kept_and_the_artifact_saved_beside(tmp_path: Path) -> None:
    pushed_at = time.time()
    (tmp_path / "tracked.txt").write_text("edited here\n")
    (tmp_path / "same.txt").write_text("as pushed\n")
    (tmp_path / "ignored.pkl").write_text("written here after the push\n")
    (tmp_path / "old.pkl").write_text("from an earlier run\n")
    os.utime(tmp_path / "old.pkl", (pushed_at - 60, pushed_at - 60))
    manifest = {
        "tracked.txt": hashlib.sha256(b"as pushed\n").hexdigest(),
        "same.txt": hashlib.sha256(b"as pushed\n").hexdigest(),
    }
    artifacts, fetch = _server(
        {
            "tracked.txt": b"from the run\n",
            "same.txt": b"from the run\n",
            "ignored.pkl": b"model\n",
            "old.pkl": b"new model\n",
            "new/file.txt": b"new\n",
        }
    )
    report = download(
        artifacts,
        fetch,
        tmp_path,
        run_id=RUN_ID,
        protect=Protection(lambda: manifest, pushed_at),
    )
    assert sorted(report.written) == ["new/file.txt", "old.pkl", "same.txt"]
    assert sorted(report.kept_local) == [
        ("ignored.pkl", "ignored.pkl.ame-01234567"),
        ("tracked.txt", "tracked.txt.ame-01234567"),
    ]
    assert (tmp_path / "tracked.txt").read_text() == "edited here\n"
    assert (tmp_path / "tracked.txt.ame-01234567").read_text() == "from the run\n"
    assert (tmp_path / "ignored.pkl").read_text() == "written here after the push\n"
    assert (tmp_path / "same.txt").read_text() == "from the run\n"
    assert (tmp_path / "old.pkl").read_text() == "new model\n"
    assert (tmp_path / "new" / "file.txt").read_text() == "new\n"
    # A second download finds every file as the run left it, or kept: nothing is written again.
    again = download(artifacts, fetch, tmp_path, run_id=RUN_ID, protect=Protection(lambda: manifest, pushed_at))
    assert sorted(again.unchanged) == ["new/file.txt", "old.pkl", "same.txt"]
    assert not list(tmp_path.rglob("*.ame-partial"))


def test_bytes_that_do_not_match_are_refused_and_the_old_file_stays(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"old")
    artifact = _artifact("model.bin", b"expected bytes")
    with pytest.raises(DownloadError, match="arrived with"):
        download([artifact], lambda _: iter([b"other bytes!!!"]), tmp_path, run_id=RUN_ID)
    assert (tmp_path / "model.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_nothing_is_written_through_a_symlink_out_of_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    artifacts, fetch = _server({"out/x.txt": b"x"})
    with pytest.raises(DownloadError, match="outside"):
        download(artifacts, fetch, dest, run_id=RUN_ID)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\x00b", "a/"])
def test_artifact_paths_must_be_plain_and_relative(path: str) -> None:
    with pytest.raises(ArtifactPathError):
        check_artifact_path(path)


def test_index_keys_name_their_attempt() -> None:
    assert index_attempt(index_key("default", "r1", 3)) == 3
    # An artifact whose own path looks like an index is still an artifact.
    assert index_attempt("orgs/default/runs/r1/artifacts/3/artifact-indexes/4") is None
    assert index_attempt("orgs/default/runs/r1/artifacts/3/index") is None
