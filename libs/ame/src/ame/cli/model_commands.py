"""`ame model train NAME` and `ame model list`: the models of ame.yml `models:` on an AME server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ame.cli.project_dir_option import project_dir_option
from ame.cli.server_option import server_option

if TYPE_CHECKING:
    from ame.domain.ml_models import ModelVersion
    from ame.sdk import Client

# How often `ame model train` looks for the next run of the version while it waits (a person is watching).
_POLL_SECONDS = 0.3


def register(cli: click.Group) -> None:
    target_option = server_option

    @cli.group()
    def model() -> None:
        """Models (ame.yml `models:`): train and validate them on the AME server, list their versions."""

    @model.command("train")
    @click.argument("name")
    @project_dir_option
    @click.option(
        "--follow/--no-follow", default=True, show_default=True, help="Stream the training and validation output."
    )
    @target_option
    def train_cmd(name: str, project_dir: Path, follow: bool, target: str | None) -> None:
        """Push the project and train model NAME: its training task, then its validation task, which finds the
        training run's artifacts in its working directory. The new version counts as validated only when the
        validation succeeds; the exit code is 0 then, 1 otherwise."""
        from ame.cli.project_commands import describe, project_name, push
        from ame.cli.template_sources import describe_pins
        from ame.sdk import AmeError, Client

        project = project_name(project_dir)
        try:
            with Client(target) as client:
                result = push(client, project_dir, project)
                click.echo(describe(result), err=True)
                if pins := describe_pins(result.version.template_pins):
                    click.echo(pins, err=True)
                version = client.train_model(project, name, result.version.id)
                click.echo(f"ame: model {name} version {version.number}: training", err=True)
                if not follow:
                    click.echo(version.id)
                    return
                final = _follow_version(client, version)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        reason = f" ({final.reason})" if final.reason else ""
        linked = f", MLflow registry version {final.mlflow_version}" if final.mlflow_version else ""
        click.echo(f"ame: model {name} version {final.number}: {final.state.value}{reason}{linked}", err=True)
        raise SystemExit(0 if final.state.value == "validated" else 1)

    @model.command("list")
    @click.option("--project", default=None, help="Only this project's models.")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(project: str | None, as_json: bool, target: str | None) -> None:
        """Each model with its latest validated version and its latest training's state."""
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                found = client.list_models(project=project)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps([m.model_dump(mode="json") for m in found], indent=2))
            return
        click.echo(f"{'PROJECT':20} {'MODEL':24} {'VALIDATED':12} {'MLFLOW':7} LATEST")
        for m in found:
            good = m.latest_validated
            validated = f"v{good.number}" if good is not None else "none"
            mlflow = (good.mlflow_version or "-") if good is not None else "-"
            latest = m.latest
            state = ""
            if latest is not None:
                state = f"v{latest.number} {latest.state.value}" + (f" ({latest.reason})" if latest.reason else "")
            click.echo(f"{m.project:20} {m.model:24} {validated:12} {mlflow:7} {state}")


def _follow_version(client: Client, version: ModelVersion) -> ModelVersion:
    """Print the training run's output, then the validation run's; returns the version once it is decided."""
    from ame.cli.remote_commands import follow

    followed: set[str] = set()
    current = version
    while True:
        current = _current(client, current)
        for run_id in (current.training_run_id, current.validation_run_id):
            if run_id and run_id not in followed:
                followed.add(run_id)
                follow(client, run_id, quiet_end=True)
                break
        else:
            if current.state.value in ("validated", "failed"):
                return current
            time.sleep(_POLL_SECONDS)


def _current(client: Client, version: ModelVersion) -> ModelVersion:
    for summary in client.list_models(project=version.project):
        if summary.model != version.model:
            continue
        for candidate in (summary.latest, summary.latest_validated):
            if candidate is not None and candidate.id == version.id:
                return candidate
    # A newer training of the model hides this one from the listing (neither latest nor latest validated): its
    # runs tell how it ended, as the api decides it from them.
    return _decided_by_runs(client, version)


def _decided_by_runs(client: Client, version: ModelVersion) -> ModelVersion:
    from ame.domain import RunState
    from ame.domain.ml_models import ModelVersionState

    if not version.training_run_id:
        return version
    training = client.get_run(version.training_run_id)
    if training.state.terminal and training.state != RunState.SUCCEEDED:
        return version.model_copy(update={"state": ModelVersionState.FAILED, "reason": training.reason})
    if training.state == RunState.SUCCEEDED and not version.has_validation:
        return version.model_copy(update={"state": ModelVersionState.VALIDATED})
    if training.state == RunState.SUCCEEDED and version.validation_run_id:
        validation = client.get_run(version.validation_run_id)
        if validation.state == RunState.SUCCEEDED:
            return version.model_copy(update={"state": ModelVersionState.VALIDATED})
        if validation.state.terminal:
            return version.model_copy(update={"state": ModelVersionState.FAILED, "reason": validation.reason})
    return version
