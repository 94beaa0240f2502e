"""Manifest rules shared by the CLI and the api: safe paths, one entry per path, a stable version id."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from ame import project_codecs
from ame.codecs import DecodeError
from ame.contracts.project.v1 import project_pb2
from ame.domain.projects import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_SYMLINK,
    ManifestEntry,
    ManifestError,
    check_manifest,
    check_path,
    manifest_digest,
    symlink_escapes,
)

SHA = hashlib.sha256(b"x").hexdigest()


def entry(path: str, sha: str = SHA, size: int = 1, mode: int = MODE_FILE) -> ManifestEntry:
    return ManifestEntry(path=path, mode=mode, sha256=sha, size=size)


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "a\\b", "a\x00b", "a\nb", "", "a/", "..", "\ud800"],
)
def test_paths_that_escape_or_are_ambiguous_are_refused(path: str) -> None:
    with pytest.raises(ManifestError):
        check_path(path)
    with pytest.raises(ValidationError):
        entry(path)


@pytest.mark.parametrize("path", ["a", "src/train.py", ".ameignore", "a b/c-d_e.f", "ünïcode/ファイル"])
def test_ordinary_relative_paths_pass(path: str) -> None:
    assert entry(path).path == path


def test_bad_digest_and_mode_are_refused() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        entry("a", sha="A" * 64)
    with pytest.raises(ValidationError, match="mode"):
        entry("a", mode=0o100600)
    with pytest.raises(ValidationError):
        ManifestEntry.model_validate({"path": "a", "sha256": SHA, "size": 1, "owner": "me"})


def test_duplicates_and_file_directory_clashes_are_refused() -> None:
    with pytest.raises(ManifestError, match="twice"):
        check_manifest([entry("a"), entry("a")])
    with pytest.raises(ManifestError, match="both a file and a directory"):
        check_manifest([entry("a/b"), entry("a/b/c/d")])
    check_manifest([entry("a/b"), entry("a/bc"), entry("ab")])


def test_version_id_depends_on_content_not_order() -> None:
    one = [entry("b"), entry("a", size=2)]
    assert manifest_digest(one) == manifest_digest(list(reversed(one)))
    other_sha = hashlib.sha256(b"y").hexdigest()
    assert manifest_digest(one) != manifest_digest([entry("b", sha=other_sha), entry("a", size=2)])
    assert manifest_digest(one) != manifest_digest([entry("b", mode=MODE_EXECUTABLE), entry("a", size=2)])
    assert len(manifest_digest(one)) == 64


@pytest.mark.parametrize(
    ("link", "target", "escapes"),
    [
        ("a", "b", False),
        ("d/a", "../b", False),
        ("d/a", "../../b", True),
        ("a", "../b", True),
        ("a", "/etc/passwd", True),
        ("d/e/a", "x/../../f", False),
        ("d/a", "x/../../../f", True),
        ("a", "", True),
    ],
)
def test_symlink_targets_must_stay_inside(link: str, target: str, escapes: bool) -> None:
    assert symlink_escapes(link, target) is escapes


def test_entries_survive_the_wire_and_bad_ones_are_decode_errors() -> None:
    entries = [entry("a"), entry("l", mode=MODE_SYMLINK, size=0)]
    assert project_codecs.entries_from_pb(project_codecs.entries_to_pb(entries)) == entries
    with pytest.raises(DecodeError, match="escapes"):
        project_codecs.entries_from_pb([project_pb2.ManifestEntry(path="../x", mode=MODE_FILE, sha256=SHA, size=1)])
