"""Which files of a project directory make up a version: ignore rules, symlinks, size limits.

`.gitignore` and `.ameignore` are honoured in every directory with git's semantics (a deeper file overrides a
shallower one, `.ameignore` overrides `.gitignore` in the same directory, an ignored directory is not entered).
A symbolic link is recorded as a link, never followed, and one that points out of the tree is left out.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.projects import MAX_PATH_BYTES, MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, symlink_escapes

IGNORE_FILES = (".gitignore", ".ameignore")
# Version control, AME's own state and bytecode never belong to a version, whatever the ignore files say.
ALWAYS_IGNORED_DIRS = frozenset({".git", ".ame", "__pycache__", ".hg", ".svn"})
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")
_GIB = 1024**3


class PackSettings(BaseSettings):
    """Client-side limits of `ame project push` (`AME_PROJECT_*`)."""

    model_config = SettingsConfigDict(env_prefix="AME_PROJECT_", extra="ignore")

    max_bytes: int = Field(5 * _GIB, ge=1, description="Largest project the CLI packs, in bytes.")
    max_files: int = Field(100_000, ge=1, description="Most files the CLI packs.")
    upload_concurrency: int = Field(4, ge=1, le=64, description="Blobs uploaded at once.")


class ProjectTooLarge(ValueError):
    """The tree is over the size or file-count limit; the message names the biggest files."""


@dataclass(frozen=True, slots=True)
class ScannedFile:
    path: str  # POSIX, relative to the project root
    absolute: Path
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    link_target: str | None = None  # set for symbolic links: the blob is the target's text


@dataclass
class Scan:
    root: Path
    files: list[ScannedFile] = field(default_factory=list)
    # Links left out because they point out of the tree; the CLI warns about them.
    escaping_links: list[str] = field(default_factory=list)
    # Names a manifest cannot carry (not UTF-8, control characters, backslashes); left out with a warning.
    unpackable: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


_Rules = list[tuple[str, pathspec.GitIgnoreSpec]]


def scan_project(root: Path, settings: PackSettings | None = None) -> Scan:
    """Every file of the project at `root` that a version holds, in path order.

    Raises:
        ProjectTooLarge: over `settings.max_bytes` or `settings.max_files`.
    """
    settings = settings or PackSettings()
    root = root.absolute()
    scan = Scan(root=root)
    real_root = os.path.realpath(root)
    _walk(root, "", [], scan, real_root)
    scan.files.sort(key=lambda f: f.path.encode("utf-8"))
    _check_limits(scan, settings)
    return scan


def _walk(directory: Path, prefix: str, rules: _Rules, scan: Scan, real_root: str) -> None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        candidate = directory / name
        if candidate.is_file() and not candidate.is_symlink():
            lines.extend(candidate.read_text(encoding="utf-8", errors="replace").splitlines())
    if lines:
        rules = [*rules, (prefix, pathspec.GitIgnoreSpec.from_lines(lines))]
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        rel = prefix + entry.name
        is_link = entry.is_symlink()
        is_dir = not is_link and entry.is_dir(follow_symlinks=False)
        if (is_dir and entry.name in ALWAYS_IGNORED_DIRS) or (rules and _ignored(rules, rel, is_dir)):
            continue
        if not _packable(entry.name) or len(rel.encode("utf-8")) > MAX_PATH_BYTES:
            scan.unpackable.append(rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            continue
        if is_link:
            _add_link(entry, rel, scan, real_root)
        elif is_dir:
            _walk(Path(entry.path), rel + "/", rules, scan, real_root)
        elif entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            mode = MODE_EXECUTABLE if st.st_mode & 0o111 else MODE_FILE
            scan.files.append(_scanned(rel, Path(entry.path), mode, st))
        # Sockets, pipes and devices are not project content.


def _packable(name: str) -> bool:
    # scandir never yields '', '.', '..' or a '/', so the name alone decides whether the path is a valid one.
    if _BAD_NAME.search(name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ignored(rules: _Rules, rel: str, is_dir: bool) -> bool:
    # The deepest ignore file with an opinion decides, as in git.
    for base, spec in reversed(rules):
        result = spec.check_file(rel[len(base) :] + ("/" if is_dir else ""))
        if result.include is not None:
            return bool(result.include)
    return False


def _add_link(entry: os.DirEntry[str], rel: str, scan: Scan, real_root: str) -> None:
    try:
        target = os.readlink(entry.path)
        resolved = os.path.realpath(entry.path)
    except OSError:
        return
    # Both checks: the text must not climb out, and neither may what the OS resolves (a chain of links can).
    inside = resolved == real_root or resolved.startswith(real_root + os.sep)
    if symlink_escapes(rel, target) or not inside:
        scan.escaping_links.append(rel)
        return
    st = entry.stat(follow_symlinks=False)
    encoded = target.encode("utf-8", errors="surrogateescape")
    scanned = _scanned(rel, Path(entry.path), MODE_SYMLINK, st)
    scan.files.append(
        ScannedFile(
            path=scanned.path,
            absolute=scanned.absolute,
            mode=MODE_SYMLINK,
            size=len(encoded),
            mtime_ns=scanned.mtime_ns,
            ctime_ns=scanned.ctime_ns,
            inode=scanned.inode,
            link_target=target,
        )
    )


def _scanned(rel: str, absolute: Path, mode: int, st: os.stat_result) -> ScannedFile:
    return ScannedFile(
        path=rel,
        absolute=absolute,
        mode=mode,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
    )


def _check_limits(scan: Scan, settings: PackSettings) -> None:
    total = scan.total_bytes
    if total <= settings.max_bytes and len(scan.files) <= settings.max_files:
        return
    biggest = sorted(scan.files, key=lambda f: f.size, reverse=True)[:5]
    listing = ", ".join(f"{f.path} ({human_bytes(f.size)})" for f in biggest)
    if total > settings.max_bytes:
        head = (
            f"the project is {human_bytes(total)} in {len(scan.files)} files, over the "
            f"{human_bytes(settings.max_bytes)} limit (AME_PROJECT_MAX_BYTES)"
        )
    else:
        head = f"the project has {len(scan.files)} files, over the {settings.max_files} limit (AME_PROJECT_MAX_FILES)"
    raise ProjectTooLarge(f"{head}; the biggest files: {listing}. Add what the runs do not need to .ameignore.")


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
