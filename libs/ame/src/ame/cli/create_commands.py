"""`ame create project` and `ame create task`: ame.yml written by the CLI, checked before it is saved.

Seed 003's getting-started guide: "To setup a project, run `ame create project`", "To create a Task use the
`ame create task` command ... the CLI will guide you through creating either one" (a single step or a
pipeline). On a terminal each command asks for what its options did not give; elsewhere (scripts, CI) the
options are the whole input and a missing required one is a usage error, as `ame task run` without NAME is.

A new task is inserted into the file as text, where the file's `tasks:` lies, so the user's comments and
layout stay as they were; the whole new file is then loaded as `ame validate` loads it, and nothing is
written unless it is valid.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import click
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ame.cli.project_dir_option import project_dir_option
from ame.domain.projects import PROJECT_NAME

__all__ = ["register"]

_EXECUTORS = ("pip", "poetry", "pipenv", "mlflow", "custom")
# A Kubernetes-style quantity (2, 500m, 4Gi, 2.5G) is written as it is; anything else is quoted.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?[A-Za-z]{0,2}$")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def register(cli: click.Group) -> None:
    cli.add_command(create_group)


@click.group("create")
def create_group() -> None:
    """Create an AME project here, or add a task to it (asks for what the options do not give)."""


@create_group.command("project")
@click.argument("name", required=False)
@click.option(
    "-p",
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to create ame.yml in (created if missing).",
)
def create_project(name: str | None, project_dir: Path) -> None:
    """Write a new ame.yml for project NAME (default: the directory's name) in the project directory."""
    existing = [project_dir / f for f in ("ame.yml", "ame.yaml") if (project_dir / f).exists()]
    if existing:
        raise click.ClickException(f"{existing[0]} exists already; `ame create task` adds tasks to it")
    default = project_dir.resolve().name
    if name is None:
        name = click.prompt("Project name", default=default, err=True) if _interactive() else default
    if not re.match(PROJECT_NAME, name) or len(name) > 128:
        raise click.BadParameter(
            f"{name!r}: a project name is letters, digits, '_', '-' and '.', starting with a letter or digit",
            param_hint="NAME",
        )
    text = f"# AME project file: `ame create task` adds a task, `ame validate` checks it.\nproject: {name}\ntasks: []\n"
    project_dir.mkdir(parents=True, exist_ok=True)
    _check(text, project_dir / "ame.yml")
    (project_dir / "ame.yml").write_text(text)
    click.echo(f"ame: created {project_dir / 'ame.yml'} for project {name}; `ame create task` adds a task", err=True)


@create_group.command("task")
@click.argument("name", required=False)
@project_dir_option
@click.option(
    "--pipeline",
    "steps",
    default=None,
    help="Make the task a pipeline of these existing tasks, in order: 'a, b' runs a then b; 'a+b, c' runs a and "
    "b together, then c.",
)
@click.option("--executor", type=click.Choice(_EXECUTORS), default=None, help="How its Python environment is set up.")
@click.option("--command", "command", default=None, help="The command the task runs (e.g. 'python train.py').")
@click.option("--python-version", default=None, help="Python version (needed by the poetry executor).")
@click.option("--cpu", default=None, help="CPUs (e.g. 2 or 500m).")
@click.option("--memory", default=None, help="Memory (e.g. 4Gi).")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="Whole GPUs.")
def create_task(
    name: str | None,
    project_dir: Path,
    steps: str | None,
    executor: str | None,
    command: str | None,
    python_version: str | None,
    cpu: str | None,
    memory: str | None,
    gpus: int | None,
) -> None:
    """Add task NAME to the project's ame.yml: a single command, or (--pipeline) a pipeline of its tasks."""
    from ame.spec import SpecError, find_project_file, load_project

    try:
        file = find_project_file(project_dir)
        project = load_project(file)
    except SpecError as exc:
        raise click.ClickException(f"{exc}\n(fix ame.yml first: the new task is checked together with it)") from None
    interactive = _interactive()
    name = name or _ask("Task name", interactive, "NAME")
    if not _TASK_NAME.match(name):
        raise click.BadParameter(
            f"{name!r}: a task name is letters, digits, '_', '-' and '.', starting with a letter or digit",
            param_hint="NAME",
        )
    if name in project.tasks:
        raise click.ClickException(f"the project has a task {name!r} already")
    single_options = (executor, command, python_version, cpu, memory, gpus)
    if steps is None and interactive and all(option is None for option in single_options):
        kind = click.prompt(
            "A single step or a pipeline of existing tasks",
            type=click.Choice(["single", "pipeline"]),
            default="single",
            err=True,
        )
        if kind == "pipeline":
            click.echo(f"  the project's tasks: {', '.join(project.tasks) or '(none yet)'}", err=True)
            steps = click.prompt("Steps in order ('a, b'; 'a+b' for a parallel group)", err=True)
    if steps is not None:
        if any(option is not None for option in single_options):
            raise click.UsageError("--pipeline names the steps; the other options describe a single-step task")
        body = _pipeline_body(steps, name, set(project.tasks))
    else:
        executor = executor or (
            click.prompt("Executor", type=click.Choice(_EXECUTORS), default="pip", err=True) if interactive else "pip"
        )
        command = command or _ask("Command", interactive, "--command", "python train.py")
        if executor == "poetry" and python_version is None:
            python_version = _ask("Python version (poetry needs one)", interactive, "--python-version", "3.11")
        if interactive and cpu is None and memory is None and gpus is None:
            cpu = click.prompt("CPUs (empty: no request)", default="", show_default=False, err=True) or None
            memory = click.prompt("Memory, e.g. 4Gi (empty: no request)", default="", show_default=False, err=True)
            gpus = click.prompt("GPUs", type=click.IntRange(min=0), default=0, err=True)
        body = _single_body(executor, command, python_version, cpu, memory or None, gpus)
    text = file.read_text()
    new_text = insert_task(text, name, body)
    _check(new_text, file)
    file.write_text(new_text)
    click.echo(f"ame: task {name} added to {file}; run it with `ame task run {name}` (-l for this machine)", err=True)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(prompt: str, interactive: bool, option: str, suggested: str | None = None) -> str:
    """Ask on a terminal (offering `suggested`); elsewhere the option is required."""
    if interactive:
        value: str = click.prompt(prompt, default=suggested, err=True)
        return value
    raise click.UsageError(f"give {option} (stdin is not a terminal to ask for it)")


def _quote(value: str) -> str:
    """A YAML scalar for `value`, quoted when it would otherwise read as something else."""
    out = io.StringIO()
    dumper = YAML(typ="safe", pure=True)
    dumper.width = 1 << 16
    dumper.dump(value, out)
    return out.getvalue().strip().removesuffix("\n...").strip()


def _single_body(
    executor: str, command: str, python_version: str | None, cpu: str | None, memory: str | None, gpus: int | None
) -> str:
    if not command.strip():
        raise click.BadParameter("the command must not be empty", param_hint="--command")
    lines = ["executor: !" + executor, f"  command: {_quote(command)}"]
    if python_version:
        lines.append(f"  pythonVersion: {_quote(python_version)}")
    resources = [(key, value) for key, value in (("cpu", cpu), ("memory", memory)) if value]
    if gpus:
        resources.append(("nvidia.com/gpu", str(gpus)))
    if resources:
        lines.append("resources:")
        lines.extend(f"  {key}: {value if _QUANTITY.match(value) else _quote(value)}" for key, value in resources)
    return "\n".join(lines) + "\n"


def _pipeline_body(steps: str, name: str, tasks: set[str]) -> str:
    stages = [[step.strip() for step in stage.split("+")] for stage in steps.split(",") if stage.strip()]
    if not stages:
        raise click.BadParameter("name at least one step", param_hint="--pipeline")
    for stage in stages:
        for step in stage:
            if step == name:
                raise click.BadParameter(f"the pipeline {name!r} cannot be a step of itself", param_hint="--pipeline")
            if step not in tasks:
                known = ", ".join(sorted(tasks)) or "none yet"
                raise click.BadParameter(
                    f"no task {step!r} in the project (its tasks: {known})", param_hint="--pipeline"
                )
    lines = ["pipeline:"]
    for stage in stages:
        if len(stage) == 1:
            lines.append(f"  - taskRef: {stage[0]}")
        else:
            lines.append(f"  - - taskRef: {stage[0]}")
            lines.extend(f"    - taskRef: {step}" for step in stage[1:])
    return "\n".join(lines) + "\n"


def insert_task(text: str, name: str, body: str) -> str:
    """`text` with task `name` (its YAML `body` at indentation 0) added to its `tasks:`.

    A block list of tasks gets the new item after its last one, indented as they are; `tasks: []` or no `tasks:`
    becomes a block list holding it; a mapping of tasks (the old dialect) gets it as `NAME:` + body.
    """
    root = YAML(typ="safe", pure=True).compose(text) if text.strip() else None
    if root is not None and not isinstance(root, MappingNode):
        raise click.ClickException("ame.yml is not a mapping of keys; fix it first")
    value = None
    for key, node in root.value if root is not None else []:
        if isinstance(key, ScalarNode) and key.value == "tasks":
            value = node
    list_item = f"- name: {name}\n" + _indent(body, 2)
    if value is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + "tasks:\n" + _indent(list_item, 2)
    empty = isinstance(value, ScalarNode) and value.value in ("", "~", "null")
    if empty or (isinstance(value, SequenceNode) and value.flow_style and not value.value):
        # `tasks:`, `tasks: ~` or `tasks: []`: that line becomes the block list.
        line_start = text.rfind("\n", 0, value.start_mark.index) + 1
        return text[:line_start] + "tasks:\n" + _indent(list_item, 2) + text[_line_end(text, value.end_mark.index) :]
    if not value.value or getattr(value, "flow_style", False):
        raise click.ClickException("ame.yml's tasks are not one per line; write them so first")
    if isinstance(value, SequenceNode):
        item = _indent(list_item, max(value.value[0].start_mark.column - 2, 0))
    elif isinstance(value, MappingNode):
        item = _indent(f"{name}:\n" + _indent(body, 2), value.value[0][0].start_mark.column)
    else:
        raise click.ClickException("ame.yml's tasks are neither a list nor a mapping; fix it first")
    last = value.value[-1]
    end = (last[1] if isinstance(last, tuple) else last).end_mark.index
    # After the last line of the last task: blank lines and comments after it (the next section's) stay below.
    cut = _line_end(text, end)
    while cut > 0:
        previous = text.rfind("\n", 0, cut - 1) + 1
        line = text[previous:cut].strip()
        if line and not line.startswith("#"):
            break
        cut = previous
    head = text[:cut] if text[:cut].endswith("\n") else text[:cut] + "\n"
    return head + item + text[cut:]


def _line_end(text: str, index: int) -> int:
    """The index just past the line `index` lies on (or `index` itself when it starts a line)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _indent(block: str, columns: int) -> str:
    pad = " " * columns
    return "".join(pad + line if line.strip() else line for line in block.splitlines(keepends=True))


def _check(text: str, file: Path) -> None:
    """Refuse (writing nothing) unless `text` loads as an AME file, with what `ame validate` would say."""
    from ame.spec import SpecError, load_project_text

    try:
        load_project_text(text, str(file))
    except SpecError as exc:
        raise click.ClickException(f"the result would not be a valid ame.yml, so nothing was written:\n{exc}") from None
