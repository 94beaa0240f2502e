"""`ame`: the root command. Subcommands live in modules named for what they do and are mounted here.

Command modules are mounted on first use and keep heavy imports inside their commands (gRPC, the runner),
so `ame validate` starts fast. Other installed packages add commands through the `ame.commands` entry-point
group (the embedded `ame server` comes from the ame-server package that way).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

import ame

# Which command modules provide each top-level command. Only the modules a command needs are imported, so
# `ame validate` does not pay for the runner, the gRPC client or the entry-point scan.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "validate": ("spec_commands",),
    "task": ("spec_commands", "local_commands", "remote_commands", "task_commands"),
    "cache": ("local_commands",),
    "artifacts": ("artifact_commands",),
    "secret": ("secret_commands",),
    "runs": ("remote_commands",),
    "admin": ("admin_commands",),
    "project": ("project_commands",),
    "setup": ("access_commands",),
    "login": ("access_commands",),
    "whoami": ("access_commands",),
    "org": ("access_commands", "org_limit_commands"),
    "token": ("access_commands",),
    "hooks": ("hook_commands",),
    "schedules": ("schedule_commands",),
    "loops": ("loop_commands",),
    "projectsrc": ("source_commands",),
    "model": ("model_commands",),
    "orchestrations": ("orchestration_commands",),
    "datasets": ("data_set_commands",),
    "create": ("create_commands",),
    "run": ("spec_commands", "local_commands", "remote_commands", "task_commands"),
}
_ALL_MODULES = (
    "spec_commands",
    "local_commands",
    "remote_commands",
    "task_commands",
    "admin_commands",
    "project_commands",
    "secret_commands",
    "artifact_commands",
    "access_commands",
    "org_limit_commands",
    "hook_commands",
    "schedule_commands",
    "loop_commands",
    "source_commands",
    "model_commands",
    "orchestration_commands",
    "data_set_commands",
    "create_commands",
)


class _LazyGroup(click.Group):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mounted: set[str] = set()
        self._plugins_loaded = False

    def _mount(self, modules: tuple[str, ...]) -> None:
        for module in modules:
            if module not in self._mounted:
                self._mounted.add(module)
                importlib.import_module(f"ame.cli.{module}").register(self)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        # Imported here: scanning installed distributions costs tens of milliseconds on every start.
        from importlib.metadata import entry_points

        for entry in entry_points(group="ame.commands"):
            command = entry.load()
            if isinstance(command, click.Command):
                self.add_command(command, entry.name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _PROVIDERS:
            self._mount(_PROVIDERS[cmd_name])
        elif cmd_name not in self.commands:
            self._load_plugins()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._mount(_ALL_MODULES)
        self._load_plugins()
        return super().list_commands(ctx)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ame.__version__, prog_name="ame")
def cli() -> None:
    """AME: declare ML work in ame.yml and run it locally or on an AME server."""


@cli.group()
def task() -> None:
    """Work with the tasks of the project in this directory."""


def main() -> None:
    cli(prog_name="ame")


if __name__ == "__main__":
    main()
