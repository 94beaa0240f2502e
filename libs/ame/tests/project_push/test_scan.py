"""What a push packs: ignore files with git's semantics, symlinks never followed out of the tree, size limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ame.domain.projects import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK
from ame.packaging import PackSettings, ProjectTooLarge, scan_project


def write(root: Path, rel: str, text: str = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def paths(root: Path, settings: PackSettings | None = None) -> list[str]:
    return [f.path for f in scan_project(root, settings).files]


def test_gitignore_and_ameignore_with_git_semantics(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\ndata/\n/build\n")
    write(tmp_path, ".ameignore", "!keep.log\nsecret.txt\n")
    for rel in ("a.log", "keep.log", "data/big.bin", "build/out", "src/build/kept", "secret.txt", "ame.yml"):
        write(tmp_path, rel)
    write(tmp_path, "src/.gitignore", "local.py\n!deep.log\n")
    write(tmp_path, "src/local.py")
    write(tmp_path, "src/deep.log")
    write(tmp_path, "src/other.log")
    assert paths(tmp_path) == [
        ".ameignore",
        ".gitignore",
        "ame.yml",
        "keep.log",
        "src/.gitignore",
        "src/build/kept",
        "src/deep.log",
    ]


def test_an_ignored_directory_is_not_entered_and_state_directories_are_never_packed(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "cache/\n!cache/wanted\n")
    write(tmp_path, "cache/wanted")
    for rel in (".git/HEAD", ".ame/index", "pkg/__pycache__/m.pyc", "pkg/m.py"):
        write(tmp_path, rel)
    assert paths(tmp_path) == [".gitignore", "pkg/m.py"]


def test_executable_bit_and_sizes(tmp_path: Path) -> None:
    script = write(tmp_path, "run.sh", "#!/bin/sh\n")
    script.chmod(0o755)
    write(tmp_path, "data.txt", "12345")
    files = {f.path: f for f in scan_project(tmp_path).files}
    assert files["run.sh"].mode == MODE_EXECUTABLE
    assert (files["data.txt"].mode, files["data.txt"].size) == (MODE_FILE, 5)


def test_symlinks_are_recorded_not_followed_and_escaping_ones_are_left_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret", "do not pack")
    root = tmp_path / "project"
    write(root, "real/file.txt", "inside")
    os.symlink("real/file.txt", root / "inner-link")
    os.symlink("real", root / "dir-link")  # a directory link is a link, never a second copy of the tree
    os.symlink(str(outside / "secret"), root / "absolute-link")
    os.symlink("../outside/secret", root / "relative-link")
    os.symlink(str(outside), root / "real/dir-out")
    os.symlink("dir-link/../../outside/secret", root / "chain-link")  # lexically inside; the OS resolves it out
    scan = scan_project(root)
    files = {f.path: f for f in scan.files}
    assert sorted(files) == ["dir-link", "inner-link", "real/file.txt"]
    assert files["inner-link"].mode == MODE_SYMLINK
    assert files["inner-link"].link_target == "real/file.txt"
    assert files["inner-link"].size == len("real/file.txt")
    assert sorted(scan.escaping_links) == ["absolute-link", "chain-link", "real/dir-out", "relative-link"]


def test_a_tree_over_the_limit_is_refused_naming_the_biggest_files(tmp_path: Path) -> None:
    write(tmp_path, "small.txt", "x" * 10)
    write(tmp_path, "models/huge.bin", "x" * 5000)
    write(tmp_path, "data/big.csv", "x" * 3000)
    with pytest.raises(ProjectTooLarge) as caught:
        scan_project(tmp_path, PackSettings(max_bytes=4096))
    message = str(caught.value)
    assert "over the 4.0 KiB limit (AME_PROJECT_MAX_BYTES)" in message
    assert message.index("models/huge.bin") < message.index("data/big.csv") < message.index("small.txt")
    with pytest.raises(ProjectTooLarge, match="3 files, over the 2 limit"):
        scan_project(tmp_path, PackSettings(max_files=2))


def test_names_a_manifest_cannot_carry_are_left_out_and_reported(tmp_path: Path) -> None:
    write(tmp_path, "good.txt")
    write(tmp_path, "back\\slash")
    write(tmp_path, "new\nline")
    write(tmp_path, "x")
    with open(os.path.join(os.fsencode(tmp_path), b"latin1-\xe9.txt"), "w") as f:
        f.write("x")
    scan = scan_project(tmp_path)
    assert [f.path for f in scan.files] == ["good.txt", "x"]
    assert sorted(scan.unpackable) == sorted(["back\\slash", "new\nline", "latin1-\ufffd.txt"])
