"""The AME services running in-process against the session's NATS and PostgreSQL, one isolated stack per test.

Each test gets its own database (`pg_dsn`) and bus namespace (`bus_prefix`), so stacks never see each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from pydantic import SecretStr

from ame.sdk.credentials import bearer, discover_token
from ame_api import app as api_app
from ame_api.secrets.settings import SecretsSettings
from ame_api.settings import ApiSettings
from ame_launcher import app as launcher_app
from ame_launcher.launches import Launcher
from ame_launcher.settings import LauncherSettings
from ame_logs import app as logs_app
from ame_logs.settings import LogsSettings
from ame_platform.lifecycle import Component, Supervisor, run_components
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings
from ame_scheduler import app as scheduler_app
from ame_scheduler.settings import SchedulerSettings
from ame_server.server import migrate_all
from tests.integration.clients import Grpc


@dataclass
class Stack:
    runtime: Runtime
    rest_url: str
    grpc_target: str
    launchers: list[Launcher]
    nats: NatsSettings
    postgres: PostgresSettings
    supervisor: Supervisor
    task: asyncio.Task[int] | None = field(default=None)

    async def stop(self) -> int:
        self.supervisor.stop.set()
        assert self.task is not None
        return await self.task


def _shared(nats: NatsSettings, postgres: PostgresSettings) -> dict[str, object]:
    return {
        "nats": nats,
        "postgres": postgres,
        "telemetry": TelemetrySettings(exporter="memory"),
        "lifecycle": LifecycleSettings(graceful_timeout=10.0),
    }


@pytest.fixture
def api_storage(tmp_path: Path) -> StorageSettings:
    """The api's object store (project blobs): a local directory. A test module overrides it to use S3."""
    return StorageSettings(local_root=tmp_path / "objects")


def _fresh_secrets() -> SecretsSettings:
    """A fresh key and launcher credential, as `ame server` generates them."""
    return SecretsSettings(
        keys={"k1": SecretStr(base64.b64encode(os.urandom(32)).decode())},
        launcher_token=SecretStr(secrets.token_urlsafe(24)),
    )


@pytest.fixture
def api_secrets() -> SecretsSettings:
    """The api's secret store; a test module overrides it to add vaults or keys."""
    return _fresh_secrets()


@pytest.fixture
def launcher_overrides() -> dict[str, object]:
    """Settings both launcher replicas get beyond the defaults; a test module overrides it (e.g. pretend GPUs)."""
    return {}


@pytest.fixture
def scheduler_overrides() -> dict[str, object]:
    """Settings the scheduler gets beyond the defaults; a test module overrides it (e.g. a short retry backoff)."""
    return {}


@pytest.fixture
def api_overrides() -> dict[str, object]:
    """Settings the api gets beyond the defaults; a test module overrides it (e.g. its clock, git sources)."""
    return {}


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    nats_url: str,
    pg_dsn: str,
    bus_prefix: str,
    tmp_path: Path,
    api_storage: StorageSettings,
    launcher_overrides: dict[str, object],
    scheduler_overrides: dict[str, object],
    api_secrets: SecretsSettings,
    api_overrides: dict[str, object],
) -> AsyncIterator[Stack]:
    """api (REST and gRPC on free ports), two launcher replicas, logs and scheduler, all started."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    telemetry = TelemetrySettings(exporter="memory")
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=telemetry) as runtime:
        shared = _shared(nats, postgres)
        api = api_app.build(
            ApiSettings(
                rest_port=0, grpc_port=0, storage=api_storage, secrets=api_secrets, **{**shared, **api_overrides}
            ),  # type: ignore[arg-type]
            runtime,
        )
        launchers = [
            launcher_app.build(
                LauncherSettings(
                    work_dir=tmp_path / f"launcher{i}",
                    grace_period=2.0,
                    # Tests that report abandoned leases do so right after the stack starts.
                    reconcile_grace=0.0,
                    storage=api_storage,
                    fetch_backoff=0.1,
                    api_target=api.grpc.target,
                    api_token=api_secrets.launcher_token,
                    **{**shared, **launcher_overrides},  # type: ignore[arg-type]
                ),
                runtime,
            )
            for i in range(2)
        ]
        components: list[Component] = [
            *logs_app.build_components(LogsSettings(**shared), runtime),  # type: ignore[arg-type]
            *launchers,
            *scheduler_app.build_components(
                SchedulerSettings(**{**shared, **scheduler_overrides}),  # type: ignore[arg-type]
                runtime,
            ),
            *api.components,
        ]
        supervisor = Supervisor()
        ready = asyncio.Event()

        async def on_ready() -> None:
            ready.set()

        result = Stack(runtime, api.rest.url, api.grpc.target, launchers, nats, postgres, supervisor)
        result.task = asyncio.create_task(
            run_components(components, graceful_timeout=10.0, supervisor=supervisor, on_ready=on_ready())
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, result.task], return_when=asyncio.FIRST_COMPLETED)
        if result.task.done():
            waiter.cancel()
            result.task.result()
            raise RuntimeError("stack stopped during start")
        try:
            yield result
        finally:
            if not result.task.done():
                await result.stop()
            await _delete_streams(runtime)
            assert supervisor.failure is None, f"a service task failed: {supervisor.failure!r}"


async def _delete_streams(runtime: Runtime) -> None:
    """JetStream reserves each stream's max_bytes for as long as it exists; a session runs hundreds of stacks on
    one nats-server, so a stack's streams go with it (its storage would otherwise run out mid-session)."""
    names = runtime.names
    for stream in (names.commands_stream, names.events_stream, names.logs_stream, names.deadletter_stream):
        with contextlib.suppress(NotFoundError):
            await runtime.js.delete_stream(stream)


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: Stack) -> AsyncIterator[Grpc]:
    """A gRPC client of the stack's api."""
    c = Grpc(stack.grpc_target)
    yield c
    await c.close()


@pytest_asyncio.fixture(loop_scope="session")
async def rest(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the stack's REST api, sending the test token."""
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as c:
        yield c


@dataclass
class ApiStack:
    """The api's front doors alone: no launcher takes the runs submitted to it, so they stay queued."""

    runtime: Runtime
    rest_url: str
    grpc_target: str


@asynccontextmanager
async def running_api(nats_url: str, pg_dsn: str, bus_prefix: str, **overrides: object) -> AsyncIterator[ApiStack]:
    """REST and gRPC of the api on free ports against `pg_dsn` (migrated here), until the block ends; `overrides`
    are ApiSettings fields (e.g. TLS files)."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as runtime:
        settings = ApiSettings(
            rest_port=0, grpc_port=0, **{**_shared(nats, postgres), "secrets": _fresh_secrets(), **overrides}
        )  # type: ignore[arg-type]
        api = api_app.build(settings, runtime)
        supervisor = Supervisor()
        ready = asyncio.Event()

        async def on_ready() -> None:
            ready.set()

        task = asyncio.create_task(
            run_components([api.rest, api.grpc], graceful_timeout=5.0, supervisor=supervisor, on_ready=on_ready())
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
            raise RuntimeError("api stopped during start")
        try:
            yield ApiStack(runtime, api.rest.url, api.grpc.target)
        finally:
            supervisor.stop.set()
            await task
            await _delete_streams(runtime)
            assert supervisor.failure is None, f"an api task failed: {supervisor.failure!r}"


@pytest_asyncio.fixture(loop_scope="session")
async def api_stack(nats_url: str, pg_dsn: str, bus_prefix: str) -> AsyncIterator[ApiStack]:
    """The api's REST and gRPC servers alone, for tests that send what no launcher should ever run."""
    async with running_api(nats_url, pg_dsn, bus_prefix) as api:
        yield api
