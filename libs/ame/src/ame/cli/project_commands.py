"""`ame project push|versions`: register the project directory on an AME server as a content-addressed version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ame.cli.server_option import server_option

if TYPE_CHECKING:
    from ame.packaging import PushResult
    from ame.sdk import Client


def project_name(project_dir: Path) -> str:
    """The `project:` of the directory's ame.yml, else the directory's name (as `ame task run` uses; also for a
    directory with PEACH files and no ame.yml).

    Raises:
        click.ClickException: the ame.yml is missing or invalid, with `file:line:col` problems.
    """
    from ame.spec import PROJECT_FILE_NAMES, SpecError, load_project
    from ame.spec.peach import find_peach_files

    if not any((project_dir / n).is_file() for n in PROJECT_FILE_NAMES) and find_peach_files(project_dir):
        return project_dir.resolve().name
    try:
        project = load_project(project_dir)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    return project.name or project_dir.resolve().name


def push(client: Client, project_dir: Path, project: str) -> PushResult:
    """Push the directory, warning about links left out; errors become ClickExceptions."""
    from ame.packaging import PackSettings, ProjectTooLarge, default_cache_dir, push_project
    from ame.sdk import AmeError

    try:
        result = push_project(project_dir, project, client, cache_dir=default_cache_dir(), settings=PackSettings())
    except ProjectTooLarge as exc:
        raise click.ClickException(str(exc)) from None
    except AmeError as exc:
        raise click.ClickException(f"push of project {project!r} failed:\n{exc}") from None
    for link in result.escaping_links:
        click.echo(f"ame: left out {link}: a symbolic link that points out of the project", err=True)
    for name in result.unpackable:
        click.echo(f"ame: left out {name}: the name is not UTF-8, or holds a control character or backslash", err=True)
    _warn_missing_secrets(client, project_dir)
    return result


def _warn_missing_secrets(client: Client, project_dir: Path) -> None:
    from ame.cli.secret_commands import warn_missing
    from ame.spec import SpecError, load_project

    try:
        project = load_project(project_dir)
    except SpecError:
        return  # the push itself reported the ame.yml's problems
    warn_missing(client, project)


def describe(result: PushResult) -> str:
    from ame.packaging.scan import human_bytes

    return (
        f"ame: project {result.version.project} version {result.version.id[:12]} "
        f"({result.total_files} files, {human_bytes(result.total_bytes)}; uploaded {result.uploaded_files} files, "
        f"{human_bytes(result.uploaded_bytes)})"
    )


def register(cli: click.Group) -> None:
    target_option = server_option

    @cli.group()
    def project() -> None:
        """The project on an AME server: push versions of it, list them."""

    @project.command("push")
    @click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False), default=Path("."))
    @click.option("--json", "as_json", is_flag=True, help="Print the version and the transfer figures as JSON.")
    @click.option(
        "--no-triggers",
        is_flag=True,
        help="Register the version without making it the trigger version: the project's schedules stay as they are.",
    )
    @target_option
    def push_cmd(directory: Path, as_json: bool, no_triggers: bool, target: str | None) -> None:
        """Register DIRECTORY (default: here) as a version, without running anything.

        Files matched by .gitignore or .ameignore are left out. Only files the server does not hold yet are
        uploaded; the version id (printed) is the content hash of the manifest, so an unchanged project always
        gives the same one. The version becomes the project's trigger version: its tasks' schedules replace the
        project's (unless --no-triggers; `enableTriggers: false` in the file activates it with none).
        """
        from ame.sdk import AmeError, Client

        name = project_name(directory)
        activation = None
        with Client(target) as client:
            result = push(client, directory, name)
            if not no_triggers:
                try:
                    activation = client.activate_version(name, result.version.id)
                except AmeError as exc:
                    raise click.ClickException(f"activating the schedules of {name!r} failed:\n{exc}") from None
        if as_json:
            figures = {
                "version": result.version.model_dump(mode="json"),
                "total_files": result.total_files,
                "total_bytes": result.total_bytes,
                "uploaded_files": result.uploaded_files,
                "uploaded_bytes": result.uploaded_bytes,
                "hashed_files": result.hashed_files,
                "activation": activation.model_dump(mode="json") if activation is not None else None,
            }
            click.echo(json.dumps(figures, indent=2))
            return
        click.echo(describe(result), err=True)
        from ame.cli.template_sources import describe_pins

        if pins := describe_pins(result.version.template_pins):
            click.echo(pins, err=True)
        if activation is not None:
            if not activation.triggers_enabled:
                click.echo("ame: triggers are off (enableTriggers: false); the project has no schedules", err=True)
            elif activation.schedules:
                names = ", ".join(s.task for s in activation.schedules)
                click.echo(f"ame: schedules: {names}", err=True)
        click.echo(result.version.id)

    @project.command("versions")
    @click.option("--project", "name", default=None, help="Project name (default: this directory's project).")
    @click.option("--limit", default=20, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def versions_cmd(name: str | None, limit: int, as_json: bool, target: str | None) -> None:
        """List the project's versions, newest first."""
        from ame.packaging.scan import human_bytes
        from ame.sdk import AmeError, Client

        name = name or project_name(Path("."))
        try:
            with Client(target) as client:
                found = client.list_versions(name, limit=limit)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps([v.model_dump(mode="json") for v in found], indent=2))
            return
        click.echo(f"{'VERSION':64}  {'FILES':>6}  {'SIZE':>10}  {'CREATED':19}  COMMIT")
        for v in found:
            created = v.created_at.strftime("%Y-%m-%d %H:%M:%S")
            commit = v.git_commit or "-"
            click.echo(f"{v.id:64}  {v.file_count:>6}  {human_bytes(v.size_bytes):>10}  {created:19}  {commit}")
