"""Running the embedded server in the foreground with its own signal handling and a readable banner."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from ame_platform.embedded import EmbeddedServerError
from ame_platform.lifecycle import Supervisor, install_signal_handlers, remove_signal_handlers
from ame_platform.service_main import configure_logging
from ame_server.server import Endpoints, ServerBusy, serve
from ame_server.settings import ServerSettings

log = logging.getLogger(__name__)


def banner(endpoints: Endpoints) -> str:
    return "\n".join(
        [
            "AME server is ready",
            f"  REST        {endpoints.rest_url}   (OpenAPI: {endpoints.rest_url}/docs)",
            f"  gRPC        {endpoints.grpc_target}",
            f"  NATS        {endpoints.nats_url}",
            f"  PostgreSQL  {endpoints.postgres_dsn}",
            f"  data        {endpoints.data_dir}",
            "Press Ctrl-C to stop.",
        ]
    )


async def _main(settings: ServerSettings) -> int:
    supervisor = Supervisor()
    install_signal_handlers(supervisor.stop)

    async def ready(endpoints: Endpoints) -> None:
        click.echo(banner(endpoints), err=False)
        sys.stdout.flush()

    try:
        code = await serve(settings, supervisor=supervisor, on_ready=ready)
    finally:
        remove_signal_handlers()
    if supervisor.gave_up:
        click.echo(f"ame server: {supervisor.gave_up}", err=True)
    click.echo("AME server stopped", err=True)
    return code


def run_server(settings: ServerSettings, *, log_level: str = "WARNING") -> int:
    configure_logging(log_level)
    try:
        return asyncio.run(_main(settings))
    except ServerBusy as exc:
        click.echo(f"ame server: {exc}", err=True)
        return 1
    except EmbeddedServerError as exc:
        click.echo(f"ame server: could not start: {exc}", err=True)
        return 1
