"""`ame secret add|list|rm`: the AME server's secret store by default, this machine's with -l.

Values are read hidden from the terminal (or from stdin when it is not one) and are never printed: `list` shows
names only. The server keeps them encrypted and hands them only to a launcher starting a run that declares them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ame.cli.server_option import server_option

if TYPE_CHECKING:
    from ame.runner.secret_sources import LocalSecretStore
    from ame.sdk import Client
    from ame.spec import Project

__all__ = ["missing_on_server", "register", "warn_missing"]

_local_option = click.option(
    "-l", "--local", is_flag=True, help="This machine's store (for `ame task run -l`), not the server's."
)
_target_option = server_option


def register(cli: click.Group) -> None:
    cli.add_command(secret_group)


@click.group("secret")
def secret_group() -> None:
    """Secrets for `!ame` entries: on the AME server (default) or, with -l, in a 0600 file on this machine."""


def _read_value(value_stdin: bool) -> str:
    if value_stdin or not sys.stdin.isatty():
        return sys.stdin.read().rstrip("\n")
    return str(click.prompt("Value", hide_input=True, confirmation_prompt=True))


@secret_group.command("add")
@click.argument("name", required=False)
@click.option("--value-stdin", is_flag=True, help="Read the value from stdin (the default when it is not a tty).")
@_local_option
@_target_option
def secret_add(name: str | None, value_stdin: bool, local: bool, target: str | None) -> None:
    """Store secret NAME; the value is prompted for (hidden), or read from stdin when it is not a terminal."""
    name = name or click.prompt("Name")
    value = _read_value(value_stdin)
    if not value:
        raise click.ClickException("the value is empty")
    if local:
        _local_store().add(name, value)
        click.echo(f"stored secret {name!r} on this machine")
        return
    from ame.sdk import AmeError

    try:
        with _client(target) as client:
            created = client.put_secret(name, value)
    except AmeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'stored' if created else 'replaced'} secret {name!r} on the server")


@secret_group.command("list")
@_local_option
@_target_option
def secret_list(local: bool, target: str | None) -> None:
    """List the names of stored secrets (never their values)."""
    if local:
        names = _local_store().list_keys()
    else:
        from ame.sdk import AmeError

        try:
            with _client(target) as client:
                names = [s.name for s in client.list_secrets()]
        except AmeError as exc:
            raise click.ClickException(str(exc)) from None
    for name in names:
        click.echo(name)


@secret_group.command("rm")
@click.argument("name")
@_local_option
@_target_option
def secret_remove(name: str, local: bool, target: str | None) -> None:
    """Delete secret NAME."""
    if local:
        if not _local_store().remove(name):
            raise click.ClickException(f"no secret {name!r}")
        click.echo(f"removed secret {name!r} from this machine")
        return
    from ame.sdk import AmeError

    try:
        with _client(target) as client:
            client.delete_secret(name)
    except AmeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"removed secret {name!r} from the server")


# `remove` was the command's first name; kept so scripts written for it go on working.
secret_group.add_command(secret_remove, "remove")


def _local_store() -> LocalSecretStore:
    from ame.runner.home import AmeHome
    from ame.runner.secret_sources import LocalSecretStore

    return LocalSecretStore(AmeHome.from_env().secrets_file)


def _client(target: str | None) -> Client:
    from ame.sdk import Client

    return Client(target)


def ame_secret_names(project: Project) -> list[str]:
    """The keys of every `!ame` secret the project's tasks and templates declare, sorted."""
    from pydantic import BaseModel

    from ame.spec.model import AmeSecret

    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, AmeSecret):
            found.add(node.key)
        elif isinstance(node, BaseModel):
            for field in type(node).model_fields:
                walk(getattr(node, field))
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(project)
    return sorted(found)


def missing_on_server(client: Client, project: Project) -> list[str]:
    """The project's `!ame` secrets the server does not hold (a check of names only)."""
    wanted = ame_secret_names(project)
    if not wanted:
        return []
    held = {s.name for s in client.list_secrets()}
    return [name for name in wanted if name not in held]


def warn_missing(client: Client, project: Project) -> None:
    """Warn, naming them, about the project's `!ame` secrets the server does not hold; never fails the caller."""
    from ame.sdk import AmeError

    try:
        missing = missing_on_server(client, project)
    except AmeError as exc:
        click.echo(f"ame: could not check the project's secrets on the server: {exc}", err=True)
        return
    if missing:
        names = ", ".join(missing)
        click.echo(
            f"ame: warning: the server has no secret {names} (declared with !ame in ame.yml); "
            "runs that need it will fail until you `ame secret add` it",
            err=True,
        )
