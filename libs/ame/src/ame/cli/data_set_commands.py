"""`ame datasets list|refresh`: data sets, produced once by their task and reused until it changes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ame.cli.human_sizes import human_size
from ame.cli.project_commands import project_name
from ame.cli.server_option import server_option


def register(cli: click.Group) -> None:
    target_option = server_option

    @cli.group()
    def datasets() -> None:
        """Data sets: produced once by their task when a task first reads them, then reused."""

    @datasets.command("list")
    @click.option("--project", default=None, help="Only this project's data sets.")
    @click.option("-l", "--local", is_flag=True, help="The data sets `ame task run -l` produced on this machine.")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(project: str | None, local: bool, as_json: bool, target: str | None) -> None:
        """Each data set's status, size, version and producing run."""
        if local:
            from ame.local_data_sets import LocalDataSets
            from ame.runner.home import AmeHome

            found = LocalDataSets(AmeHome.from_env()).summaries(project)
        else:
            from ame.sdk import AmeError, Client

            try:
                with Client(target) as client:
                    found = client.list_data_sets(project=project)
            except AmeError as exc:
                raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps([d.model_dump(mode="json") for d in found], indent=2))
            return
        click.echo(f"{'PROJECT':20} {'NAME':20} {'STATUS':8} {'SIZE':>10} {'FILES':>6} {'VERSION':12} RUN")
        for d in found:
            version = d.version_id[:12] or "-"
            run = d.run_id or "-"
            size = human_size(d.size_bytes)
            click.echo(f"{d.project:20} {d.name:20} {d.status:8} {size:>10} {d.file_count:>6} {version:12} {run}")
            if d.status == "failed" and d.reason:
                click.echo(f"  {d.reason}")

    @datasets.command("refresh")
    @click.argument("name")
    @click.option("--project", default=None, help="The data set's project (default: this directory's).")
    @click.option("-l", "--local", is_flag=True, help="Forget the version produced on this machine.")
    @target_option
    def refresh_cmd(name: str, project: str | None, local: bool, target: str | None) -> None:
        """Produce data set NAME again (the server starts its task now; -l: the next local run produces it)."""
        project = project or project_name(Path("."))
        if local:
            from ame.local_data_sets import LocalDataSets
            from ame.runner.home import AmeHome

            if not LocalDataSets(AmeHome.from_env()).forget(project, name):
                raise click.ClickException(f"no data set {name!r} of project {project!r} was produced here")
            click.echo(f"ame: data set {project}/{name} will be produced again by the next run that reads it")
            return
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                summary = client.refresh_data_set(project, name)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"ame: data set {summary.project}/{summary.name} is {summary.status} (run {summary.run_id or '-'})")
