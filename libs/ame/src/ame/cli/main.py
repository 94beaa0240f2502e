"""`ame`: the root command. Subcommands live in modules named for what they do and are mounted here.

Imports stay inside commands where they are heavy (gRPC, the runner), so `ame --help` and `ame validate`
start fast. Other installed packages add commands through the `ame.commands` entry-point group (the embedded
`ame server` comes from the ame-server package that way).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import click

import ame


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ame.__version__, prog_name="ame")
def cli() -> None:
    """AME: declare ML work in ame.yml and run it locally or on an AME server."""


@cli.group()
def task() -> None:
    """Work with the tasks of the project in this directory."""


def _mount() -> None:
    for module in ("spec_commands", "local_commands", "remote_commands"):
        try:
            mod = importlib.import_module(f"ame.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ame.cli.{module}":
                raise
            continue
        mod.register(cli)
    for entry in entry_points(group="ame.commands"):
        command = entry.load()
        if isinstance(command, click.Command):
            cli.add_command(command, entry.name)


_mount()


def main() -> None:
    cli(prog_name="ame")


if __name__ == "__main__":
    main()
