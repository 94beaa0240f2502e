"""`ame projectsrc add|list|remove|sync`: git repositories whose branch head becomes a project version."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from ame.cli.server_option import server_option

if TYPE_CHECKING:
    from ame.domain.sources import ProjectSource


def _when(source: ProjectSource) -> str:
    return source.synced_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if source.synced_at else "-"


def describe(source: ProjectSource) -> str:
    """One source's status as `add` and `sync` print it."""
    where = f" ({source.path})" if source.path else ""
    text = f"ame: {source.url}{where} branch {source.branch or '(default)'}: {source.state.value}"
    if source.synced_commit:
        text += f"; commit {source.synced_commit[:7]} is version {source.version_id[:12]} of {source.project}"
    if source.reason:
        text += "\n" + "\n".join(f"  {line}" for line in source.reason.splitlines())
    return text


def register(cli: click.Group) -> None:
    target_option = server_option

    @cli.group()
    def projectsrc() -> None:
        """Git project sources: the server tracks a repository's branch, and each new head holding ame.yml
        becomes a project version (tagged with its short commit hash) whose schedules and webhooks go live."""

    @projectsrc.command("add")
    @click.argument("url")
    @click.option("--branch", default="", help="The branch to track (default: the remote's default branch).")
    @click.option("--path", "path", default="", help="The project's directory in the repository (default: its root).")
    @click.option("--interval", default="", help="How often to sync, e.g. 1m, 30s (default: the server's, 1m).")
    @click.option("--secret", default="", help="Secret store entry git authenticates with: a token, or an SSH key.")
    @click.option("--hook-secret", default="", help="Secret store entry that signs the source's push webhook.")
    @click.option("--no-wait", is_flag=True, help="Do not wait for the first sync.")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def add_cmd(
        url: str,
        branch: str,
        path: str,
        interval: str,
        secret: str,
        hook_secret: str,
        no_wait: bool,
        as_json: bool,
        target: str | None,
    ) -> None:
        """Track URL's branch; waits for the first sync and prints its status (and the push webhook's URL)."""
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                source = client.add_project_source(
                    url, branch=branch, path=path, interval=interval, secret=secret, hook_secret=hook_secret
                )
                if not no_wait:
                    source = client.sync_project_source(source.id)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(source.model_dump(mode="json"), indent=2))
            return
        click.echo(describe(source), err=True)
        if source.hook_secret_name:
            click.echo(f"ame: push webhook: {source.hook_url}", err=True)
        click.echo(source.id)

    @projectsrc.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def list_cmd(as_json: bool, target: str | None) -> None:
        """Each source with its state (Pending, Synchronising, Synchronized, Error), reason, last synced commit
        and time."""
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                found = client.list_project_sources()
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
            return
        click.echo(f"{'ID':36}  {'URL':40} {'BRANCH':12} {'STATE':13} {'COMMIT':8} {'SYNCED':19}  PROJECT")
        for s in found:
            url = s.url + (f"//{s.path}" if s.path else "")
            click.echo(
                f"{s.id:36}  {url:40} {s.branch or '-':12} {s.state.value:13} {s.synced_commit[:7] or '-':8} "
                f"{_when(s):19}  {s.project or '-'}"
            )
            if s.reason:
                for line in s.reason.splitlines():
                    click.echo(f"    {line}")

    @projectsrc.command("remove")
    @click.argument("source")
    @target_option
    def remove_cmd(source: str, target: str | None) -> None:
        """Stop tracking SOURCE (its id, or its URL); the versions it made stay."""
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                removed = client.remove_project_source(source)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"ame: no longer tracking {removed.url} ({removed.id})", err=True)

    @projectsrc.command("sync")
    @click.argument("source")
    @click.option("--json", "as_json", is_flag=True)
    @target_option
    def sync_cmd(source: str, as_json: bool, target: str | None) -> None:
        """Sync SOURCE (its id, or its URL) now and print its status; exits 1 when it is in Error."""
        from ame.domain.sources import SourceState
        from ame.sdk import AmeError, Client

        try:
            with Client(target) as client:
                synced = client.sync_project_source(source)
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(synced.model_dump(mode="json"), indent=2))
        else:
            click.echo(describe(synced))
        if synced.state is SourceState.ERROR:
            raise SystemExit(1)
