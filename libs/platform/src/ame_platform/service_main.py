"""The command line every AME service shares: `serve` (the default), `migrate` and `check-config`.

python -m ame_api            # serve
python -m ame_api migrate    # apply this service's migrations (a Kubernetes Job in production)
python -m ame_api check-config
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from ame_platform.db import migrations
from ame_platform.health import Health, HealthServer
from ame_platform.lifecycle import (
    Component,
    RestartPolicy,
    Supervisor,
    install_signal_handlers,
    remove_signal_handlers,
    run_components,
)
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings

log = logging.getLogger(__name__)


class ServiceSettings(Protocol):
    nats: NatsSettings
    postgres: PostgresSettings
    telemetry: TelemetrySettings
    lifecycle: LifecycleSettings
    health_port: int | None


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    settings_factory: Callable[[], Any]
    migrations_package: str
    build: Callable[[Any, Runtime], Sequence[Component]]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


async def migrate(definition: ServiceDefinition, postgres: PostgresSettings) -> list[migrations.Migration]:
    import asyncpg

    conn = await asyncpg.connect(postgres.dsn.get_secret_value())
    try:
        return await migrations.apply(conn, definition.name, migrations.load(definition.migrations_package))
    finally:
        await conn.close()


async def serve(definition: ServiceDefinition, settings: ServiceSettings) -> int:
    supervisor = Supervisor()
    install_signal_handlers(supervisor.stop)
    try:
        async with open_runtime(
            name=f"ame-{definition.name}",
            nats=settings.nats,
            postgres=settings.postgres,
            telemetry=settings.telemetry,
        ) as runtime:
            async with runtime.pool.acquire() as conn:
                await migrations.check(conn, definition.name, migrations.load(definition.migrations_package))
            components = definition.build(settings, runtime)
            health = Health.for_runtime(supervisor, runtime)
            async with contextlib.AsyncExitStack() as probes:
                if settings.health_port is not None:
                    await probes.enter_async_context(HealthServer(health, "0.0.0.0", settings.health_port))
                code = await run_components(
                    components,
                    graceful_timeout=settings.lifecycle.graceful_timeout,
                    supervisor=supervisor,
                    on_ready=health.mark_started_when_ready(),
                    restart=RestartPolicy.from_settings(settings.lifecycle),
                )
    finally:
        remove_signal_handlers()
    if supervisor.gave_up:
        print(f"ame-{definition.name}: {supervisor.gave_up}", file=sys.stderr)
    return code


def main(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"ame-{definition.name}", description=f"AME {definition.name} service")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate", "check-config"])
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = definition.settings_factory()
    except ValidationError as exc:
        print(f"ame-{definition.name}: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(settings.model_dump_json(indent=2))  # SecretStr fields print as '**********'
        return 0
    try:
        if args.command == "migrate":
            done = asyncio.run(migrate(definition, settings.postgres))
            print(f"ame-{definition.name}: applied {len(done)} migration(s)")
            return 0
        return asyncio.run(serve(definition, settings))
    except migrations.SchemaError as exc:
        print(f"ame-{definition.name}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
