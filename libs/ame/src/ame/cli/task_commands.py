"""`ame task list` and `ame task logs`: the tasks an AME server knows, and the output of their runs.

The server's tasks are those of each project's latest pushed version (`ame project push`, or the push a remote
`ame task run` makes first), each with its last run. `ame task logs` finds a run by task name (preferring the
project of the current directory), by run id, or by a unique prefix of a run id, and follows it while it runs.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ame.domain import Run
    from ame.domain.tasks import TaskSummary
    from ame.sdk import Client

__all__ = ["register"]

# A name or run that matches nothing: 2, like a usage error, so a script can tell it from a run that failed (1).
NOT_FOUND_EXIT = 2
# Candidates shown for an ambiguous run id prefix.
_MAX_CANDIDATES = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class NotFoundError(click.ClickException):
    """Nothing matches what was asked for (exit code 2)."""

    exit_code = NOT_FOUND_EXIT


def _server_option() -> click.Option:
    return click.Option(
        ["--server", "target"],
        envvar="AME_GRPC_TARGET",
        default=None,
        help="gRPC address of the AME server (default: the local `ame server`, else 127.0.0.1:50051).",
    )


def register(cli: click.Group) -> None:
    task_group = cli.commands.get("task")
    if not isinstance(task_group, click.Group):
        raise RuntimeError("the `task` group must exist before the task commands are registered")
    list_command.params.append(_server_option())
    logs_command.params.append(_server_option())
    task_group.add_command(list_command)
    task_group.add_command(logs_command)


# --- ame task list ------------------------------------------------------------------------------


@click.command("list")
@click.option("--project", default=None, help="Only this project's tasks.")
@click.option("--json", "as_json", is_flag=True, help="Print the tasks and their last runs as JSON.")
def list_command(project: str | None, as_json: bool, target: str | None) -> None:
    """List the tasks on the AME server, with their last run.

    The tasks of a project are those of the version pushed last (`ame project push`, or `ame task run`, which
    pushes first). STATUS is the last run's state, or "never run".
    """
    from ame.sdk import AmeError, Client

    try:
        with Client(target) as client:
            tasks = client.list_tasks(project=project)
    except AmeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in tasks], indent=2))
        return
    if not tasks:
        where = f"project {project!r} has" if project else "the server has"
        click.echo(f"{where} no tasks; `ame project push` registers a project's tasks", err=True)
        return
    now = datetime.now(UTC)
    rows = [("Name", "Status", "Project", "Started", "Duration")]
    rows.extend((t.name, t.status, t.project, *_started_and_duration(t, now)) for t in tasks)
    _echo_table(rows)


def _started_and_duration(task: TaskSummary, now: datetime) -> tuple[str, str]:
    run = task.last_run
    if run is None or run.started_at is None:
        return "-", "-"
    started = run.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if run.finished_at is not None:
        return started, _duration((run.finished_at - run.started_at).total_seconds())
    if run.state.terminal:
        return started, "-"
    return started, _duration((now - run.started_at).total_seconds()) + " so far"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _echo_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# --- ame task logs ------------------------------------------------------------------------------


@click.command("logs")
@click.argument("what", required=False, metavar="[TASK | RUN_ID | RUN_ID_PREFIX]")
@click.option(
    "--project",
    default=None,
    help="The project whose task is meant (default: the project in this directory, then any project).",
)
def logs_command(what: str | None, project: str | None, target: str | None) -> None:
    """Print a run's output and follow it while it runs; exit with the run's exit code.

    TASK shows the task's latest run, from the project in this directory when it has one by that name, else from
    any project. A run id, or a unique prefix of one (at least 4 hex digits), names the run itself. Without an
    argument: the latest run of this directory's project. Nothing matching exits with code 2.
    """
    from ame.cli.remote_commands import follow
    from ame.sdk import AmeError, Client

    try:
        with Client(target) as client:
            run = _find_run(client, what, project, _current_project())
            click.echo(f"ame: run {run.id}: {run.spec.project}/{run.spec.task} ({run.state.value})", err=True)
            code = follow(client, run.id)
    except AmeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _current_project() -> str | None:
    """The project of the ame.yml in this directory (named as `ame task run` names it), if there is a valid one."""
    from ame.spec import SpecError, load_project
    from ame.spec.loader import PROJECT_FILE_NAMES

    here = Path(".")
    if not any((here / name).is_file() for name in PROJECT_FILE_NAMES):
        return None
    try:
        project = load_project(here)
    except SpecError:
        return None
    return project.name or here.resolve().name


def _find_run(client: Client, what: str | None, project: str | None, current: str | None) -> Run:
    """The run `what` names: see `ame task logs --help` for the order in which it is tried."""
    from ame.domain.ids import prefix_digits
    from ame.sdk import NotFound

    if what is None:
        scope = project or current
        runs = client.list_runs(project=scope, limit=1)
        if not runs:
            raise NotFoundError(f"project {scope!r} has no runs yet" if scope else "the server has no runs yet")
        return runs[0]
    if _is_run_id(what):
        try:
            return client.get_run(what)
        except NotFound:
            raise NotFoundError(f"no run {what!r}") from None
    if _NAME.match(what):
        found = _latest_of_task(client, what, project, current)
        if found is not None:
            return found
    if project is None:
        try:
            digits = prefix_digits(what)
        except ValueError:
            digits = None
        if digits is not None:
            candidates = client.list_runs(id_prefix=digits, limit=_MAX_CANDIDATES + 1)
            if len(candidates) == 1:
                return candidates[0]
            if candidates:
                raise NotFoundError(_ambiguous(what, candidates))
    raise NotFoundError(_nothing_matches(client, what, project))


def _is_run_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _latest_of_task(client: Client, task: str, project: str | None, current: str | None) -> Run | None:
    if project is not None:
        runs = client.list_runs(project=project, task=task, limit=1)
        return runs[0] if runs else None
    if current is not None:
        runs = client.list_runs(project=current, task=task, limit=1)
        if runs:
            return runs[0]
    runs = client.list_runs(task=task, limit=1)
    return runs[0] if runs else None


def _ambiguous(prefix: str, candidates: list[Run]) -> str:
    shown = candidates[:_MAX_CANDIDATES]
    lines = [f"run id prefix {prefix!r} matches {'more than ' if len(candidates) > len(shown) else ''}"]
    lines[0] += f"{len(shown)} runs; give more of the id:"
    lines.extend(f"  {r.id}  {r.spec.project}/{r.spec.task}  {r.state.value}" for r in shown)
    return "\n".join(lines)


def _nothing_matches(client: Client, what: str, project: str | None) -> str:
    """Why nothing matched: a task that exists but never ran says so; anything else is unknown."""
    known = [t for t in client.list_tasks(project=project) if t.name == what] if _NAME.match(what) else []
    if known:
        where = ", ".join(sorted({t.project for t in known}))
        return f"task {what!r} (project {where}) has not run yet; start it with `ame task run {what}`"
    scope = f" in project {project!r}" if project else ""
    return f"no task{scope} or run matches {what!r}; `ame task list` shows the tasks, `ame runs list` the runs"
