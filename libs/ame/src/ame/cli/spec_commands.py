"""`ame validate` and `ame task view`: check and show the project file without a server.

The spec is imported inside the commands so `ame --help` does not pay for pydantic and
the YAML parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ame.spec import ExternalTemplates, SpecError

_WITH_PROJECT_HELP = (
    "Directory of another AME project whose templates this project uses (fromTemplate with a project). Repeatable."
)


def register(cli: click.Group) -> None:
    """Add `validate` to the root group and `view` to its `task` group."""
    cli.add_command(validate)
    task_group = cli.commands["task"]
    assert isinstance(task_group, click.Group), "main.py must create the `task` group first"
    task_group.add_command(view)


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path), default=Path("."))
@click.option(
    "--with-project", "with_projects", multiple=True, type=click.Path(path_type=Path), help=_WITH_PROJECT_HELP
)
def validate(path: Path, with_projects: tuple[Path, ...]) -> None:
    """Check the ame.yml in PATH (default: here) and its PEACH files (peach.yaml, peach.conf/*.yaml), and report
    every problem at once."""
    from ame.spec import PROJECT_FILE_NAMES, SpecError, external_template_refs, find_project_file, load_project
    from ame.spec.peach import find_peach_files

    if path.is_dir() and find_peach_files(path):
        _validate_peach(path)
        if not any((path / name).is_file() for name in PROJECT_FILE_NAMES):
            return
    try:
        file = find_project_file(path)
        project = load_project(file, external_templates=_external(with_projects))
    except SpecError as error:
        _report(error)
        raise SystemExit(1) from None
    counts = [_count(len(project.tasks), "task"), _count(len(project.templates), "template")]
    if project.models:
        counts.append(_count(len(project.models), "model"))
    if project.data_sets:
        counts.append(_count(len(project.data_sets), "data set"))
    click.echo(f"{file}: valid ({', '.join(counts)})")
    if not with_projects:
        for other, name in external_template_refs(project):
            click.echo(
                f"note: template '{name}' of project '{other}' was not checked; pass --with-project DIR to check it",
                err=True,
            )


@click.command()
@click.argument("name")
@click.option(
    "--file",
    "-f",
    "path",
    type=click.Path(path_type=Path),
    default=Path("."),
    help="The project file or its directory (default: here).",
)
@click.option(
    "--with-project", "with_projects", multiple=True, type=click.Path(path_type=Path), help=_WITH_PROJECT_HELP
)
@click.option(
    "--server",
    "from_server",
    is_flag=True,
    help="Resolve the task of the project's latest version on the AME server, with the versions of other projects "
    "the server pinned when it took that push (printed first, as comments).",
)
@click.option("--version", "version_id", default=None, help="With --server: this version instead of the latest.")
def view(name: str, path: Path, with_projects: tuple[Path, ...], from_server: bool, version_id: str | None) -> None:
    """Print task NAME fully resolved (templates, references and defaults applied) as YAML."""
    from ame.spec import SpecError, load_project, resolve_task
    from ame.spec.yaml_writer import to_yaml

    if from_server:
        _view_on_server(name, path, version_id)
        return
    external = _external(with_projects)
    try:
        project = load_project(path, external_templates=external)
        task = resolve_task(project, name, external_templates=external)
    except SpecError as error:
        _report(error)
        raise SystemExit(1) from None
    click.echo(to_yaml(task.to_spec()), nl=False)


def _validate_peach(directory: Path) -> None:
    """The PEACH files' fields (`file:line:col`), and each task's notebook as the server will run it."""
    from ame.peach.notebooks import NotebookError, task_script
    from ame.spec import SpecError
    from ame.spec.peach import load_peach_directory

    try:
        config = load_peach_directory(directory)
    except SpecError as error:
        _report(error)
        raise SystemExit(1) from None
    problems = []
    for task in config.tasks:
        notebook = directory / task.notebook
        if not notebook.is_file():
            problems.append(f"{task.file}: task {task.name!r}: notebook {task.notebook} not found")
            continue
        try:
            task_script(notebook.read_text("utf-8-sig"), task.notebook, task.method, full_notebook=task.full_notebook)
        except (NotebookError, UnicodeDecodeError) as exc:
            problems.append(f"{task.file}: task {task.name!r}: {exc}")
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        click.echo(f"{_count(len(problems), 'problem')} found", err=True)
        raise SystemExit(1)
    loops = sorted({t.loop_name for t in config.tasks})
    click.echo(
        f"PEACH files of organisation {config.codops}: valid ({_count(len(config.tasks), 'task')}; loops: "
        f"{', '.join(loops)})"
    )


def _view_on_server(name: str, path: Path, version_id: str | None) -> None:
    """The task as the server resolves it: the version's own ame.yml, and the pinned versions of other projects."""
    from ame.cli.project_commands import project_name
    from ame.cli.template_sources import pinned_templates
    from ame.sdk import AmeError, Client
    from ame.spec import SpecError, load_project_text, resolve_task
    from ame.spec.loader import PROJECT_FILE_NAMES
    from ame.spec.yaml_writer import to_yaml

    project = project_name(path if path.is_dir() else path.parent)
    try:
        with Client(None) as client:
            if version_id is None:
                versions = client.list_versions(project, limit=1)
                if not versions:
                    raise click.ClickException(f"project {project!r} has no version on the server; push it first")
                version_id = versions[0].id
            version, files = client.get_version(project, version_id)
            entry = next((f for f in files if f.path in PROJECT_FILE_NAMES), None)
            if entry is None:
                raise click.ClickException(f"version {version.id[:12]} of {project!r} has no ame.yml")
            text = b"".join(client.download_blob(project, entry.sha256)).decode("utf-8-sig")
            external = pinned_templates(client, version.template_pins)
            spec = load_project_text(text, entry.path, external_templates=external)
            task = resolve_task(spec, name, external_templates=external)
    except SpecError as error:
        _report(error)
        raise SystemExit(1) from None
    except AmeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"# project {project} version {version.id}")
    for other, pinned in sorted(version.template_pins.items()):
        click.echo(f"# templates from project {other} version {pinned}")
    click.echo(to_yaml(task.to_spec()), nl=False)


def _external(directories: tuple[Path, ...]) -> ExternalTemplates | None:
    from ame.spec import templates_from

    return templates_from(directories) if directories else None


def _report(error: SpecError) -> None:
    for problem in error.problems:
        click.echo(str(problem), err=True)
    count = len(error.problems)
    click.echo(f"{_count(count, 'problem')} found", err=True)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
