"""`--args JSON` / `--args-file PATH`: task arguments for `ame task run` (local or remote) and `ame runs submit`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import JsonValue

F = TypeVar("F", bound=Callable[..., Any])


def args_options(function: F) -> F:
    function = click.option(
        "--args-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Task arguments: a file holding JSON.",
    )(function)
    return click.option(
        "--args",
        "args_json",
        default=None,
        metavar="JSON",
        help="Task arguments as JSON; the task reads them with ame.task_args() or from AME_TASK_ARGS(_FILE).",
    )(function)


def parse_args_options(args_json: str | None, args_file: Path | None) -> JsonValue:
    """The arguments the options give (None for none); a clear usage error for anything else."""
    # Imported here: the CLI's start-up stays light for the commands that take no arguments.
    from ame.domain.limits import MAX_TASK_ARGS_BYTES
    from ame.domain.task_args import decode_task_args, encode_task_args

    if args_json is not None and args_file is not None:
        raise click.UsageError("give --args or --args-file, not both")
    if args_file is not None:
        if args_file.stat().st_size > 4 * 1024 * 1024:
            raise click.BadParameter(f"{args_file} is over 4 MiB", param_hint="--args-file")
        args_json, hint = args_file.read_text(encoding="utf-8-sig"), "--args-file"
    else:
        hint = "--args"
    if args_json is None:
        return None
    try:
        value = decode_task_args(args_json.strip())
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=hint) from None
    size = len(encode_task_args(value))
    if size > MAX_TASK_ARGS_BYTES:
        raise click.BadParameter(f"{size} bytes as JSON; at most {MAX_TASK_ARGS_BYTES}", param_hint=hint)
    return value
