"""`ame server`: the embedded default. Mounted into the `ame` CLI through the `ame.commands` entry point.

This module is imported by every `ame` invocation, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where NATS, PostgreSQL and run data live (default: $AME_HOME/server, ~/.ame/server).",
)
@click.option("--host", default=None, help="Address REST and gRPC bind (default 127.0.0.1).")
@click.option("--rest-port", type=int, default=None, help="REST port (default 8080; 0 picks a free one).")
@click.option("--grpc-port", type=int, default=None, help="gRPC port (default 50051; 0 picks a free one).")
@click.option(
    "--backend",
    type=click.Choice(["local", "kubernetes"]),
    default=None,
    help="Where runs execute: local processes (default) or pods (AME_LAUNCHER_KUBERNETES_*, an S3 store).",
)
@click.option("--log-level", default="WARNING", show_default=True)
def server(
    data_dir: Path | None,
    host: str | None,
    rest_port: int | None,
    grpc_port: int | None,
    backend: str | None,
    log_level: str,
) -> None:
    """Start AME on this machine: NATS, PostgreSQL and the api, scheduler, launcher and logs services.

    Runs in the foreground until Ctrl-C (or SIGTERM), then stops everything it started. A second start
    with the same data directory keeps the runs, logs and schedules of the first.
    """
    from pydantic import ValidationError

    from ame_server.settings import ServerSettings

    flags = {"data_dir": data_dir, "host": host, "rest_port": rest_port, "grpc_port": grpc_port, "backend": backend}
    try:
        settings = ServerSettings()
        # Flags win over AME_SERVER_* variables; validate_assignment checks each value.
        for name, value in flags.items():
            if value is not None:
                setattr(settings, name, value)
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from None
    from ame_server.run import run_server

    sys.exit(run_server(settings, log_level=log_level))
