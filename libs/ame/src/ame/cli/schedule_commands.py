"""`ame schedules list|pause|resume|trigger`: the schedules of each project's trigger version."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo

import click

from ame.cli.server_option import server_option


def _local_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _when(value: datetime | None, zone: tzinfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if value is not None else "-"


def register(cli: click.Group) -> None:
    target_option = server_option
    project_option = click.option(
        "--project", default=None, help="The project, when several have a schedule of this name."
    )

    @cli.group()
    def schedules() -> None:
        """Schedules: the `triggers.schedule` of the tasks of each project's trigger version."""

    @schedules.command("list")
    @click.option("--project", default=None, help="Only this project's schedules.")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(project: str | None, as_json: bool, target: str | None) -> None:
        """Schedules with their next fire times (in this machine's zone), last run and state."""
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                found = client.list_schedules(project=project)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
            return
        zone = _local_zone()
        click.echo(f"{'PROJECT':20} {'NAME':24} {'SCHEDULE':16} {'ZONE':16} {'STATE':7} {'NEXT':22} LAST RUN")
        for s in found:
            following = _when(s.next_fire_times[0] if s.next_fire_times else None, zone)
            last = f"{s.last_run_state} {_when(s.last_run_at, zone)}" if s.last_run_id else "never"
            click.echo(f"{s.project:20} {s.task:24} {s.cron:16} {s.timezone:16} {s.state:7} {following:22} {last}")

    def _change(action: str, name: str, project: str | None, target: str | None) -> None:
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                if action == "trigger":
                    run = client.trigger_schedule(name, project=project)
                    click.echo(f"ame: run {run.id} {run.state.value}", err=True)
                    click.echo(run.id)
                    return
                change = client.pause_schedule if action == "pause" else client.resume_schedule
                summary = change(name, project=project)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"ame: schedule {summary.project}/{summary.task} is {summary.state}")

    @schedules.command("pause")
    @click.argument("name")
    @project_option
    @target_option
    def pause_cmd(name: str, project: str | None, target: str | None) -> None:
        """Pause schedule NAME (a task's name): its slots do not fire until it is resumed."""
        _change("pause", name, project, target)

    @schedules.command("resume")
    @click.argument("name")
    @project_option
    @target_option
    def resume_cmd(name: str, project: str | None, target: str | None) -> None:
        """Resume schedule NAME: it fires from its next slot on (slots passed while paused do not fire)."""
        _change("resume", name, project, target)

    @schedules.command("trigger")
    @click.argument("name")
    @project_option
    @target_option
    def trigger_cmd(name: str, project: str | None, target: str | None) -> None:
        """Start schedule NAME's run now, out of turn; prints the run id."""
        _change("trigger", name, project, target)
