"""The `-p/--project-dir` option of every command that works on the project in a directory, defined once."""

from __future__ import annotations

from pathlib import Path

import click

project_dir_option = click.option(
    "-p",
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory holding ame.yml.",
)
