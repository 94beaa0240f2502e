"""`ame hooks list`: each webhook's URL (where senders POST) and its most recent deliveries."""

from __future__ import annotations

import json

import click

from ame.cli.server_option import server_option

__all__ = ["register"]


def register(cli: click.Group) -> None:
    cli.add_command(hooks_group)


@click.group("hooks")
def hooks_group() -> None:
    """Webhooks: tasks with `triggers: {webhook: {secret: KEY}}` in the pushed project's ame.yml."""


@hooks_group.command("list")
@click.option("--project", default=None, help="Only this project's hooks.")
@click.option("--deliveries", "shown", default=5, show_default=True, help="Recent deliveries shown per hook.")
@click.option("--json", "as_json", is_flag=True, help="Print every hook and its deliveries as JSON.")
@server_option
def hooks_list(project: str | None, shown: int, as_json: bool, target: str | None) -> None:
    """List each webhook's URL and recent deliveries (time, delivery id, outcome, run id).

    A sender signs each delivery with the hook's secret (`ame secret add KEY`): GitHub's X-Hub-Signature-256, or
    AME's replay-safe X-AME-Timestamp and X-AME-Signature-256 over "<timestamp>.<body>".
    """
    from ame.sdk import AmeError, Client

    try:
        with Client(target) as client:
            hooks = client.list_webhooks(project=project)
    except AmeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([h.model_dump(mode="json") for h in hooks], indent=2))
        return
    if not hooks:
        click.echo("no webhooks: add `triggers: {webhook: {secret: KEY}}` to a task and `ame project push`")
        return
    for hook in hooks:
        click.echo(f"{hook.project}/{hook.task}  POST {hook.url}  (secret {hook.secret_name})")
        if not hook.deliveries:
            click.echo("    no deliveries yet")
        for d in hook.deliveries[:shown]:
            when = d.received_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"    {when}  {d.delivery_id}  {d.status} {d.outcome}  {d.run_id or '-'}")
