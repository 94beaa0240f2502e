"""The embedded default: nats-server and PostgreSQL in a data directory, and all four services in one process.

The services share one NATS connection and one connection pool here, but are built exactly as when each
runs alone (`ame-api`, `ame-launcher`, ...): from their own settings, through their own `build_components`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
from pydantic import SecretStr

from ame.sdk.credentials import SERVER_TOKEN_FILE, write_private
from ame_api import app as api_app
from ame_api import bootstrap
from ame_api.settings import ApiSettings
from ame_api.sources.settings import SourceSettings
from ame_launcher import app as launcher_app
from ame_launcher.settings import LauncherSettings
from ame_logs import app as logs_app
from ame_logs.settings import LogsSettings
from ame_platform.db import migrations
from ame_platform.embedded import EmbeddedNats, EmbeddedPostgres
from ame_platform.lifecycle import Component, RestartPolicy, Supervisor, run_components
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings
from ame_scheduler import app as scheduler_app
from ame_scheduler.settings import SchedulerSettings
from ame_server.secret_material import secrets_settings
from ame_server.settings import ServerSettings

DATABASE = "ame"
SERVICES = (
    (api_app.SERVICE, api_app.MIGRATIONS),
    (scheduler_app.SERVICE, scheduler_app.MIGRATIONS),
    (launcher_app.SERVICE, launcher_app.MIGRATIONS),
    (logs_app.SERVICE, logs_app.MIGRATIONS),
)


class ServerBusy(RuntimeError):
    """Another `ame server` already uses this data directory."""


@dataclass(frozen=True)
class Endpoints:
    rest_url: str
    grpc_target: str
    nats_url: str
    postgres_dsn: str
    data_dir: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": os.getpid(),
                "rest_url": self.rest_url,
                "grpc_target": self.grpc_target,
                "nats_url": self.nats_url,
                "postgres_dsn": self.postgres_dsn,
                "data_dir": str(self.data_dir),
            },
            indent=2,
        )


def endpoints_file(data_dir: Path) -> Path:
    return data_dir / "server.json"


def admin_token_file(data_dir: Path) -> Path:
    """The local server-admin token: where the CLI and the SDK on this machine find it (ame.sdk.credentials)."""
    return data_dir / SERVER_TOKEN_FILE


async def ensure_admin_token(dsn: str, data_dir: Path) -> None:
    """On the first start (or when the token written then no longer works), create a server-admin token and
    write it, mode 0600, into the data directory: the local CLI and SDK send it, so nobody types anything."""
    path = admin_token_file(data_dir)
    try:
        existing = path.read_text().strip()
    except OSError:
        existing = ""
    conn = await asyncpg.connect(dsn)
    try:
        if existing and await bootstrap.is_valid(conn, existing):
            return
        _, token = await bootstrap.create_token(conn, name="local ame server", created_by="ame server")
    finally:
        await conn.close()
    write_private(path, token + "\n")


@contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (data_dir / "server.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ServerBusy(f"another `ame server` is using {data_dir}") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


async def _ensure_database(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn("postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
    finally:
        await conn.close()
    if not exists:
        await pg.create_database(DATABASE)


async def migrate_all(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        applied = 0
        for service, package in SERVICES:
            applied += len(await migrations.apply(conn, service, migrations.load(package)))
        return applied
    finally:
        await conn.close()


def _storage(settings: ServerSettings) -> StorageSettings:
    """AME_STORAGE_* as set; a local store without a configured root keeps its objects in the data directory."""
    storage = StorageSettings()
    if storage.backend == "local" and "AME_STORAGE_LOCAL_ROOT" not in os.environ:
        storage = storage.model_copy(update={"local_root": settings.data_dir / "objects"})
    return storage


def _sources(settings: ServerSettings) -> SourceSettings:
    """AME_PROJECTSRC_* as set; without a cache directory, git sources keep their clones in the data directory."""
    sources = SourceSettings()
    if sources.cache_dir is None:
        sources = sources.model_copy(update={"cache_dir": settings.data_dir / "projectsrc"})
    return sources


def build_components(
    settings: ServerSettings, runtime: Runtime, nats: NatsSettings, postgres: PostgresSettings
) -> tuple[list[Component], str, str]:
    """All four services' components, and the REST URL and gRPC target the api listens on."""
    telemetry = TelemetrySettings()
    lifecycle = LifecycleSettings(graceful_timeout=settings.graceful_timeout)
    secrets = secrets_settings(settings.data_dir)
    api = api_app.build(
        ApiSettings(
            rest_host=settings.host,
            rest_port=settings.rest_port,
            grpc_host=settings.host,
            grpc_port=settings.grpc_port,
            nats=nats,
            postgres=postgres,
            telemetry=telemetry,
            lifecycle=lifecycle,
            storage=_storage(settings),
            secrets=secrets,
            projectsrc=_sources(settings),
        ),
        runtime,
    )
    backend: dict[str, object] = {"backend": settings.backend} if settings.backend else {}
    launcher = launcher_app.build_components(
        LauncherSettings(
            **backend,  # type: ignore[arg-type]
            work_dir=settings.data_dir / "launcher",
            storage=_storage(settings),
            api_target=api.grpc.target,
            api_token=secrets.launcher_token,
            nats=nats,
            postgres=postgres,
            telemetry=telemetry,
            lifecycle=lifecycle,
        ),
        runtime,
    )
    logs = logs_app.build_components(
        LogsSettings(nats=nats, postgres=postgres, telemetry=telemetry, lifecycle=lifecycle), runtime
    )
    scheduler = scheduler_app.build_components(
        SchedulerSettings(nats=nats, postgres=postgres, telemetry=telemetry, lifecycle=lifecycle), runtime
    )
    # Order matters for start (consumers before front doors) and, reversed, for the drain.
    components = [*logs, *launcher, *scheduler, *api.components]
    return components, api.rest.url, api.grpc.target


async def serve(
    settings: ServerSettings,
    *,
    supervisor: Supervisor,
    on_ready: Callable[[Endpoints], Awaitable[None]] | None = None,
) -> int:
    """Run the whole embedded stack until the supervisor's stop flag is set; returns the exit code."""
    data_dir = settings.data_dir.absolute()
    with _data_dir_lock(data_dir):
        return await _serve_locked(settings, data_dir, supervisor, on_ready)


async def _serve_locked(
    settings: ServerSettings,
    data_dir: Path,
    supervisor: Supervisor,
    on_ready: Callable[[Endpoints], Awaitable[None]] | None,
) -> int:
    async with AsyncExitStack() as stack:
        nats_server = EmbeddedNats(data_dir / "nats", port=settings.nats_port)
        pg_server = EmbeddedPostgres(data_dir / "postgres", port=settings.postgres_port)
        await asyncio.gather(nats_server.start(), pg_server.start())
        stack.push_async_callback(nats_server.stop)
        stack.push_async_callback(pg_server.stop)
        await _ensure_database(pg_server)
        dsn = pg_server.dsn(DATABASE)
        await migrate_all(dsn)
        await ensure_admin_token(dsn, data_dir)

        nats = NatsSettings(url=nats_server.url, prefix=settings.bus_prefix)
        postgres = PostgresSettings(dsn=SecretStr(dsn), pool_max_size=20)
        runtime = await stack.enter_async_context(
            open_runtime(name="ame-server", nats=nats, postgres=postgres, telemetry=TelemetrySettings())
        )
        components, rest_url, grpc_target = build_components(settings, runtime, nats, postgres)
        endpoints = Endpoints(rest_url, grpc_target, nats_server.url, dsn, data_dir)
        info = endpoints_file(data_dir)

        async def ready() -> None:
            info.write_text(endpoints.to_json())
            if on_ready is not None:
                await on_ready(endpoints)

        try:
            return await run_components(
                components,
                graceful_timeout=settings.graceful_timeout,
                supervisor=supervisor,
                on_ready=ready(),
                # One component's failure (a consumer, a loop) restarts that component, not the whole server.
                restart=RestartPolicy.from_settings(LifecycleSettings(graceful_timeout=settings.graceful_timeout)),
            )
        finally:
            info.unlink(missing_ok=True)


def read_endpoints(data_dir: Path) -> dict[str, str] | None:
    """What a running server wrote about itself, or None."""
    try:
        return dict(json.loads(endpoints_file(data_dir).read_text()))
    except (OSError, ValueError):
        return None
