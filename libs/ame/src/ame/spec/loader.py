"""Find and load an AME project file, collecting every problem before giving up.

The stages are: bounded read -> YAML to located tree -> normalise dialects -> validate
fields (pydantic) -> resolve references. Problems from all stages are gathered so one
``ame validate`` run shows everything to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ame.spec.diagnostics import problems_from_validation
from ame.spec.errors import SpecError
from ame.spec.model import Project, Template
from ame.spec.normalise import normalise_project
from ame.spec.resolve import ExternalTemplates, check_project
from ame.spec.yaml_tree import Limits, LocDict, read_yaml

PROJECT_FILE_NAMES = ("ame.yml", "ame.yaml")


def find_project_file(start: Path) -> Path:
    """The ``ame.yml`` (or ``ame.yaml``) in directory ``start``.

    Raises:
        SpecError: neither file exists, or both do (AME would not know which one you edit).
    """
    if start.is_file():
        return start
    found = [start / name for name in PROJECT_FILE_NAMES if (start / name).is_file()]
    if not found:
        raise SpecError.single(
            f"no ame.yml or ame.yaml in {start}; run this inside an AME project or pass its directory",
            str(start),
        )
    if len(found) > 1:
        raise SpecError.single(f"both ame.yml and ame.yaml exist in {start}; keep one of them", str(found[1]))
    return found[0]


def load_project(
    path: Path, *, limits: Limits | None = None, external_templates: ExternalTemplates | None = None
) -> Project:
    """Load the project at ``path`` (the file, or the directory holding it).

    Raises:
        SpecError: with every problem found (syntax, fields, references).
    """
    file = find_project_file(path)
    text = read_text(file, limits)
    return load_project_text(text, str(file), limits=limits, external_templates=external_templates)


def read_text(file: Path, limits: Limits | None = None) -> str:
    """Read ``file`` as UTF-8 without ever holding more than ``limits.max_bytes`` + 1 bytes."""
    limits = limits or Limits()
    try:
        with file.open("rb") as stream:
            data = stream.read(limits.max_bytes + 1)
    except OSError as error:
        raise SpecError.single(f"cannot read the file: {error.strerror or error}", str(file)) from None
    if len(data) > limits.max_bytes:
        raise SpecError.single(f"file is larger than the {limits.max_bytes // 1024} KiB limit for AME files", str(file))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise SpecError.single("the file is not UTF-8 text", str(file), line, column) from None


def load_project_text(
    text: str,
    filename: str = "ame.yml",
    *,
    limits: Limits | None = None,
    external_templates: ExternalTemplates | None = None,
) -> Project:
    """Load a project from the text of an AME file; ``filename`` is used in messages.

    Raises:
        SpecError: with every problem found (syntax, fields, references).
    """
    tree, problems = read_yaml(text, filename, limits)
    canonical, normalise_problems = normalise_project(tree, filename)
    problems.extend(normalise_problems)
    try:
        project = Project.model_validate(canonical)
    except ValidationError as error:
        problems.extend(problems_from_validation(error, canonical, filename))
        salvaged = _salvage(canonical, error)
        if salvaged is not None:
            salvaged._file = filename
            problems.extend(check_project(salvaged, external_templates=external_templates))
        raise SpecError(problems) from None
    project._file = filename
    problems.extend(check_project(project, external_templates=external_templates))
    if problems:
        raise SpecError(problems)
    return project


def templates_from(directories: Iterable[Path], *, limits: Limits | None = None) -> ExternalTemplates:
    """An ``external_templates`` lookup over other projects on disk (``--with-project``).

    Projects are loaded on first use and indexed by their ``project:`` name.
    """
    projects: dict[str, Project] | None = None

    def lookup(project: str, name: str) -> Template:
        nonlocal projects
        if projects is None:
            projects = {}
            for directory in directories:
                loaded = load_project(directory, limits=limits)
                if loaded.name is not None:
                    projects[loaded.name] = loaded
        if project not in projects:
            raise LookupError(f"no project named '{project}' among {', '.join(projects) or 'the given projects'}")
        return projects[project].templates[name]

    return lookup


def _salvage(canonical: LocDict, error: ValidationError) -> Project | None:
    """The project with invalid tasks/templates replaced by stand-ins, to check references.

    Without this, one typo in one task would hide every unknown-taskRef problem elsewhere.
    Stand-ins have a placeholder executor so they cause no follow-on problems themselves.
    Returns ``None`` when something outside tasks and templates is invalid.
    """
    broken: dict[str, set[str]] = {"tasks": set(), "templates": set()}
    for detail in error.errors(include_url=False):
        loc = detail["loc"]
        if len(loc) < 2 or loc[0] not in broken or not isinstance(loc[1], str):
            return None
        broken[str(loc[0])].add(loc[1])
    salvaged = LocDict(canonical.mark)
    for key, value in canonical.items():
        if key in broken and isinstance(value, LocDict):
            value = _with_stand_ins(value, broken[key])
        salvaged.put(key, value, canonical.key_mark(key), canonical.value_mark(key))
    try:
        return Project.model_validate(salvaged)
    except ValidationError:
        return None


def _with_stand_ins(entries: LocDict, names: set[str]) -> LocDict:
    out = LocDict(entries.mark)
    for name, value in entries.items():
        if name in names:
            stand_in: Any = LocDict(entries.value_mark(name))
            executor = LocDict(entries.value_mark(name))
            executor.put("kind", "custom", executor.mark, executor.mark)
            executor.put("command", "true", executor.mark, executor.mark)
            stand_in.put("name", name, stand_in.mark, stand_in.mark)
            stand_in.put("executor", executor, stand_in.mark, stand_in.mark)
            value = stand_in
        out.put(name, value, entries.key_mark(name), entries.value_mark(name))
    return out
