"""Does a synced tree hold a project, and which files declare it: `project_in_tree`, the one place that decides.

A sync checks out the branch head of a source and hands the tree to `project_in_tree`. Two front doors are
known: `ame.yml` (or `ame.yaml`) at the source's directory (`kind` "ame"), and PEACH's `peach.yaml` /
`peach.conf/*.yaml` (seed 002; `kind` "peach" when the tree holds only those). PEACH files are checked here
too, and their `codops` must be the organisation the tree belongs to (the source's).

What happens to the answer (`ame_api.sources.sync`): the tree at `SourceTree.root` is pushed as project
`TreeProject.name` through `ame.packaging.push_project` and activated, exactly as `ame project push` of that
directory would be; `ProjectService.commit` accepts a version holding `ame.yml`, PEACH files, or both, and
checks them again. A problem found here is raised as `TreeProblem` with `file:line:col` lines, which become
the source's Error reason with the last good version left active.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from ame.spec import SpecError, load_project_text
from ame.spec.loader import PROJECT_FILE_NAMES, read_text
from ame.spec.peach import PEACH_DIRECTORY, PEACH_ROOT_FILE, check_codops, find_peach_files, load_peach_texts
from ame.spec.yaml_tree import Limits

__all__ = ["SourceTree", "TreeProblem", "TreeProject", "project_in_tree"]


@dataclass(frozen=True)
class SourceTree:
    """One commit of a source, checked out, as the detection sees it."""

    organisation: str  # the source's organisation: the project is made there, and only there
    root: Path  # the source's directory (`--path`) in the checkout
    path: str  # that directory relative to the repository root ('' for the root), for messages
    url: str
    branch: str
    commit: str  # the full commit id

    def display(self, name: str) -> str:
        """A file's name as problems show it: relative to the repository root."""
        return posixpath.join(self.path, name) if self.path else name


@dataclass(frozen=True)
class TreeProject:
    """The project a tree holds."""

    kind: str  # the front door: "ame" (an ame.yml, maybe PEACH files beside it) or "peach" (PEACH files only)
    name: str  # the project name: the file's `project:`, else the source directory's (or repository's) name
    files: tuple[str, ...]  # the files that declare it, relative to `SourceTree.root`


class TreeProblem(Exception):
    """The tree holds a project file that cannot be used; `problems` are `file:line:col: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def default_name(tree: SourceTree) -> str:
    """What `ame project push` would call a clone of the repository: the directory's name."""
    if tree.path:
        return posixpath.basename(tree.path.rstrip("/"))
    last = tree.url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return last.removesuffix(".git") or "project"


def project_in_tree(tree: SourceTree) -> TreeProject | None:
    """The project `tree` holds, or None when it holds no project file (the sync then waits for one).

    Raises:
        TreeProblem: a project file is there but broken (with `file:line:col` problems, as `ame validate` says).
    """
    peach = _peach_files(tree)
    present = [n for n in PROJECT_FILE_NAMES if (tree.root / n).exists() or (tree.root / n).is_symlink()]
    if not present:
        # PEACH only (seed 002): the project is named after the directory, as `ame project push` names it.
        return TreeProject(kind="peach", name=default_name(tree), files=peach) if peach else None
    if len(present) > 1:
        raise TreeProblem([f"{tree.display(present[1])}: both ame.yml and ame.yaml exist; keep one of them"])
    name = present[0]
    file = tree.root / name
    if file.is_symlink() or not file.is_file():
        # A link could point anywhere on the server; the file must be the tree's own.
        raise TreeProblem([f"{tree.display(name)}: the project file must be a regular file, not a symbolic link"])
    limits = Limits()
    try:
        spec = load_project_text(read_text(file, limits), tree.display(name), limits=limits)
    except SpecError as error:
        raise TreeProblem([str(p).replace(str(file), tree.display(name)) for p in error.problems]) from None
    return TreeProject(kind="ame", name=spec.name or default_name(tree), files=(name, *peach))


def _peach_files(tree: SourceTree) -> tuple[str, ...]:
    """The tree's PEACH files (`peach.yaml`, `peach.conf/*.yaml`), checked: fields as `ame validate` checks them,
    and their `codops` must be the source's organisation. () when there are none."""
    found = find_peach_files(tree.root)
    links = [p for p in (tree.root / PEACH_ROOT_FILE, tree.root / PEACH_DIRECTORY) if p.is_symlink()]
    links += [p for p in found if p.is_symlink()]
    if links:
        name = links[0].relative_to(tree.root).as_posix()
        raise TreeProblem([f"{tree.display(name)}: PEACH files must be the tree's own files, not symbolic links"])
    if not found:
        return ()
    limits = Limits()
    names = [p.relative_to(tree.root).as_posix() for p in found]
    try:
        texts = {tree.display(n): read_text(tree.root / n, limits) for n in names}
        check_codops(load_peach_texts(texts, limits=limits), tree.organisation)
    except SpecError as error:
        raise TreeProblem([str(p).replace(str(tree.root) + "/", "") for p in error.problems]) from None
    return tuple(names)
