"""The `--server` option of every command that talks to an AME server, defined once."""

from __future__ import annotations

import click

server_option = click.option(
    "--server",
    "target",
    envvar="AME_GRPC_TARGET",
    default=None,
    help="gRPC address of the AME server (default: the configured server, else the local `ame server`, else "
    "127.0.0.1:50051).",
)
