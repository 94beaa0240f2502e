"""PEACH task files (seed 002): `peach.yaml` at a project's root, or `peach.conf/*.yaml`.

Each file names its organisation (`codops`) and tasks, each a notebook and the entry function (`method`) that
the organisation's loop runs one after another. They are read with the same located YAML tree and the same
`file:line:col` problems as `ame.yml`, and every file's problems are gathered before giving up.

AME runs a task with no `executor` as `python` (the seed's default, Spark on YARN, does not exist here);
`executor: spark` is accepted and reported as unsupported unless the server has a Spark master. `timeout` is
AME's addition: the seed's fixed one hour (five minutes in the metadata loop) applies when it is absent; in the
metadata loop, shared by every organisation, it may not exceed those five minutes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ame.domain.durations import Timeout
from ame.domain.limits import NAME_PATTERN
from ame.spec.diagnostics import problems_from_validation
from ame.spec.errors import Problem, SpecError
from ame.spec.yaml_tree import Limits, LocDict, read_yaml

PEACH_ROOT_FILE = "peach.yaml"
PEACH_DIRECTORY = "peach.conf"
METADATA_LOOP = "metadata"
DEFAULT_TIMEOUT_SECONDS = 3600.0
METADATA_TIMEOUT_SECONDS = 300.0

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
_Requirement = Annotated[str, Field(min_length=1, max_length=500)]


def is_peach_file(path: str) -> bool:
    """True for `peach.yaml` at the root and for `peach.conf/<name>.yaml` (or `.yml`) directly in that folder."""
    if path == PEACH_ROOT_FILE:
        return True
    folder, _, name = path.partition("/")
    stem, _, suffix = name.rpartition(".")
    return folder == PEACH_DIRECTORY and "/" not in name and suffix in ("yaml", "yml") and stem != ""


def find_peach_files(directory: Path) -> list[Path]:
    """The PEACH files in a project directory: `peach.yaml`, then `peach.conf/*.yaml` (and `.yml`) by name."""
    found = [directory / PEACH_ROOT_FILE] if (directory / PEACH_ROOT_FILE).is_file() else []
    folder = directory / PEACH_DIRECTORY
    if folder.is_dir():
        found.extend(
            sorted(p for p in folder.iterdir() if p.is_file() and is_peach_file(f"{PEACH_DIRECTORY}/{p.name}"))
        )
    return found


def load_peach_directory(directory: Path, *, limits: Limits | None = None) -> PeachConfig:
    """Load the directory's PEACH files (`ame validate`); SpecError with `file:line:col` problems."""
    from ame.spec.loader import read_text

    texts = {}
    problems: list[Problem] = []
    for path in find_peach_files(directory):
        try:
            texts[path.relative_to(directory).as_posix()] = read_text(path, limits)
        except SpecError as error:
            problems.extend(error.problems)
    if problems:
        raise SpecError(problems)
    return load_peach_texts(texts, limits=limits)


class PeachTask(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notebook: str = Field(min_length=1, max_length=1000, description="The notebook, relative to the root.")
    method: str = Field(min_length=1, max_length=200, description="The entry function the loop calls.")
    full_notebook: bool = Field(False, description="Run every cell before calling `method`, not only its own cell.")
    executor: Literal["python", "spark"] = "python"
    loop: str | None = Field(None, description="`metadata` for the shared metadata loop; else the codops' loop.")
    dependencies: list[_Requirement] = Field(default_factory=list, max_length=500)
    timeout: Timeout | None = None

    @field_validator("notebook")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
            raise ValueError("must be a path relative to the repository root, without '..'")
        if not value.endswith(".ipynb"):
            raise ValueError("must name a notebook (.ipynb)")
        return value

    @field_validator("method")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be the name of a Python function")
        return value


class PeachFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    codops: _Name
    tasks: dict[_Name, PeachTask] = Field(min_length=1)
    dependencies: list[_Requirement] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _loops(self) -> PeachFile:
        for name, task in self.tasks.items():
            if task.loop not in (None, METADATA_LOOP, self.codops):
                raise ValueError(
                    f"task {name!r}: loop must be {METADATA_LOOP!r} or the organisation's own ({self.codops!r})"
                )
        return self


@dataclass(frozen=True)
class PeachTaskDef:
    """One task as the loop runs it: where it was declared, and the file's global dependencies merged in."""

    name: str
    file: str
    codops: str
    notebook: str
    method: str
    full_notebook: bool
    executor: str
    loop: str  # "" for the organisation's own loop
    dependencies: tuple[str, ...]
    timeout_seconds: float

    @property
    def loop_name(self) -> str:
        return self.loop or self.codops


@dataclass(frozen=True)
class PeachConfig:
    codops: str
    tasks: tuple[PeachTaskDef, ...]
    codops_marks: tuple[tuple[str, int, int], ...]  # (file, line, column) of each file's codops value


def load_peach_texts(texts: Mapping[str, str], *, limits: Limits | None = None) -> PeachConfig:
    """Load every PEACH file (path -> text); SpecError lists each problem as `file:line:col: message`.

    A task name is unique across the files, and every file names the same organisation.
    """
    problems: list[Problem] = []
    tasks: list[PeachTaskDef] = []
    seen: dict[str, str] = {}
    codops: str | None = None
    marks: list[tuple[str, int, int]] = []
    for filename in sorted(texts):
        try:
            tree, found = read_yaml(texts[filename], filename, limits)
        except SpecError as error:
            problems.extend(error.problems)
            continue
        problems.extend(found)
        if not isinstance(tree, LocDict):
            problems.append(Problem(filename, 1, 1, "a PEACH file is a mapping with `codops` and `tasks`"))
            continue
        try:
            parsed = PeachFile.model_validate(tree)
        except ValidationError as error:
            problems.extend(problems_from_validation(error, tree, filename))
            continue
        line, column = tree.value_mark("codops")
        marks.append((filename, line, column))
        if codops is None:
            codops = parsed.codops
        elif parsed.codops != codops:
            problems.append(
                Problem(filename, line, column, f"codops {parsed.codops!r} differs from {codops!r} of the other files")
            )
        task_marks = tree["tasks"]
        for name, task in parsed.tasks.items():
            if name in seen:
                at = task_marks.key_mark(name) if isinstance(task_marks, LocDict) else tree.mark
                problems.append(Problem(filename, at[0], at[1], f"task {name!r} is also defined in {seen[name]}"))
                continue
            seen[name] = filename
            loop = METADATA_LOOP if task.loop == METADATA_LOOP else ""
            default = METADATA_TIMEOUT_SECONDS if loop else DEFAULT_TIMEOUT_SECONDS
            if loop and task.timeout is not None and float(task.timeout) > METADATA_TIMEOUT_SECONDS:
                # The metadata loop is shared by every organisation: one long task would hold all of them.
                entry = task_marks[name] if isinstance(task_marks, LocDict) else None
                at = entry.value_mark("timeout") if isinstance(entry, LocDict) else tree.mark
                problems.append(
                    Problem(
                        filename,
                        at[0],
                        at[1],
                        f"task {name!r}: timeout is at most {METADATA_TIMEOUT_SECONDS:.0f}s in the shared "
                        f"{METADATA_LOOP!r} loop",
                    )
                )
                continue
            tasks.append(
                PeachTaskDef(
                    name=name,
                    file=filename,
                    codops=parsed.codops,
                    notebook=task.notebook,
                    method=task.method,
                    full_notebook=task.full_notebook,
                    executor=task.executor,
                    loop=loop,
                    dependencies=tuple(dict.fromkeys([*parsed.dependencies, *task.dependencies])),
                    timeout_seconds=float(task.timeout) if task.timeout is not None else default,
                )
            )
    if problems:
        raise SpecError(problems)
    if codops is None:
        raise SpecError.single("no PEACH file found (peach.yaml or peach.conf/*.yaml)")
    return PeachConfig(codops=codops, tasks=tuple(tasks), codops_marks=tuple(marks))


def check_codops(config: PeachConfig, organisation: str) -> None:
    """SpecError at each file's `codops` when it names another organisation than the one the files belong to."""
    if config.codops == organisation:
        return
    raise SpecError(
        Problem(file, line, column, f"codops {config.codops!r} is not this project's organisation {organisation!r}")
        for file, line, column in config.codops_marks
    )
