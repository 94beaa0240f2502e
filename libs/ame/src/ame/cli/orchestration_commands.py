"""`ame orchestrations ...`: seed 004's orchestrations and tasks from the shell (the SDK's `ame.Client()` does the
same from Python). A group of its own, so it is not confused with `ame task`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ame.cli.server_option import server_option
from ame.cli.task_args_options import args_options, parse_args_options


def _json_args(args_json: str | None, args_file: Path | None) -> Any:
    """The task's json_args from the options; none given is `{}`, the seed's default."""
    given = parse_args_options(args_json, args_file)
    return {} if given is None else given


def register(cli: click.Group) -> None:
    target_option = server_option
    timeout_option = click.option("--timeout", type=int, default=None, help="Timeout of each run, in seconds.")

    def client(target: str | None) -> Any:
        from ame.sdk.orchestrations import Client

        return Client(target)

    def fail(exc: Exception) -> click.ClickException:
        return click.ClickException(str(exc))

    @cli.group()
    def orchestrations() -> None:
        """Orchestrations (a ZIP with main.py) and their tasks: run once or on a cron schedule."""

    @orchestrations.command("upload")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--name", default=None, help="The orchestration's name (default: the file's name without .zip).")
    @click.option("--wait/--no-wait", default=True, help="Wait until its environment is built.")
    @target_option
    def upload(path: Path, name: str | None, wait: bool, target: str | None) -> None:
        """Upload a ZIP; uploading a name again makes a new version."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                found = wl.upload_orchestration(path=path, name=name)
                if wait:
                    found.wait_for_packaging()
                click.echo(str(found))
        except (AmeError, ValueError, TimeoutError) as exc:
            raise fail(exc) from None

    @orchestrations.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(as_json: bool, target: str | None) -> None:
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                found = wl.list_orchestrations()
        except AmeError as exc:
            raise fail(exc) from None
        if as_json:
            click.echo(json.dumps([o.record.model_dump(mode="json") for o in found], indent=2))
        else:
            click.echo(repr(found))

    @orchestrations.command("delete")
    @click.argument("name")
    @target_option
    def delete(name: str, target: str | None) -> None:
        """Delete an orchestration (name or id); its scheduled tasks stop."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                wl.get_orchestration(name).delete()
        except AmeError as exc:
            raise fail(exc) from None
        click.echo(f"deleted {name}")

    @orchestrations.command("run-once")
    @click.argument("orchestration")
    @click.option("--name", "task_name", required=True, help="The task's name.")
    @args_options
    @timeout_option
    @target_option
    def run_once(
        orchestration: str,
        task_name: str,
        args_json: str | None,
        args_file: Path | None,
        timeout: int | None,
        target: str | None,
    ) -> None:
        """Start a Temporary Run of ORCHESTRATION (name or id)."""
        from ame.sdk import AmeError

        arguments = _json_args(args_json, args_file)
        try:
            with client(target) as wl:
                task = wl.get_orchestration(orchestration).run_once(task_name, arguments, timeout)
        except (AmeError, TimeoutError) as exc:
            raise fail(exc) from None
        click.echo(str(task))

    @orchestrations.command("schedule")
    @click.argument("orchestration")
    @click.option("--name", "task_name", required=True, help="The task's name.")
    @click.option("--schedule", "cron", required=True, help="A cron expression, e.g. '*/5 * * * *'.")
    @args_options
    @timeout_option
    @target_option
    def schedule(
        orchestration: str,
        task_name: str,
        cron: str,
        args_json: str | None,
        args_file: Path | None,
        timeout: int | None,
        target: str | None,
    ) -> None:
        """Start a Scheduled Run of ORCHESTRATION: a run each time the schedule fits, until killed."""
        from ame.sdk import AmeError

        arguments = _json_args(args_json, args_file)
        try:
            with client(target) as wl:
                task = wl.get_orchestration(orchestration).run_scheduled(task_name, cron, arguments, timeout)
        except (AmeError, TimeoutError, ValueError) as exc:
            raise fail(exc) from None
        click.echo(str(task))

    @orchestrations.command("tasks")
    @click.option("--killed", is_flag=True, help="Only the killed tasks.")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def tasks(killed: bool, as_json: bool, target: str | None) -> None:
        """Every task, newest first."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                found = wl.list_tasks(killed=killed)
        except AmeError as exc:
            raise fail(exc) from None
        if as_json:
            click.echo(json.dumps([t.record.model_dump(mode="json") for t in found], indent=2))
        else:
            click.echo(repr(found))

    @orchestrations.command("kill")
    @click.argument("task_id")
    @click.option("--cancel", is_flag=True, help="Also cancel its runs that have not ended.")
    @target_option
    def kill(task_id: str, cancel: bool, target: str | None) -> None:
        """Stop a task's future runs."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                click.echo(wl.get_task(task_id).kill(cancel=cancel).value)
        except AmeError as exc:
            raise fail(exc) from None

    @orchestrations.command("runs")
    @click.argument("task_id")
    @click.option("--status", default="all", help="Only runs with this status (success, failure, running, ...).")
    @click.option("--limit", type=int, default=None)
    @target_option
    def runs(task_id: str, status: str, limit: int | None, target: str | None) -> None:
        """A task's runs, newest first."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                click.echo(repr(wl.get_task(task_id).last_runs(status=status, limit=limit)))
        except AmeError as exc:
            raise fail(exc) from None

    @orchestrations.command("logs")
    @click.argument("task_id")
    @click.option("--run", "run_id", default=None, help="This run of the task (default: its newest).")
    @click.option("--limit", type=int, default=None, help="Only the last N lines.")
    @target_option
    def logs(task_id: str, run_id: str | None, limit: int | None, target: str | None) -> None:
        """The output of a task's run, each line with its time."""
        from ame.sdk import AmeError

        try:
            with client(target) as wl:
                found = wl.get_task(task_id).last_runs()
                chosen = [r for r in found if run_id is None or r.run_id == run_id][:1]
                if not chosen:
                    raise click.ClickException(f"task {task_id} has no run" + (f" {run_id}" if run_id else " yet"))
                click.echo(str(chosen[0].logs(limit=limit)))
        except AmeError as exc:
            raise fail(exc) from None
