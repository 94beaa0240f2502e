"""A stack with several api replicas sharing one NATS namespace and one database, and a token per organisation.

A request acts for its token's organisation, whichever replica it reaches; the replicas share their durable
consumers and each runs its own admission tick, as replicas in production do. Each organisation's token is a
server-admin one of that organisation, so a test can both submit for it and set limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from pydantic import SecretStr

from ame.domain.principals import Scope
from ame.domain.quotas import LoopLimits
from ame.sdk.credentials import bearer
from ame_api import app as api_app
from ame_api import bootstrap
from ame_api.settings import AdmissionSettings, ApiSettings
from ame_launcher import app as launcher_app
from ame_launcher.settings import LauncherSettings
from ame_logs import app as logs_app
from ame_logs.settings import LogsSettings
from ame_platform.lifecycle import Component, Supervisor, run_components
from ame_platform.runtime import open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_server.server import migrate_all
from tests.stack_fixtures import _delete_streams


@dataclass
class AdmissionStack:
    rest_urls: dict[str, list[str]]
    """REST URLs of the api replicas, by the organisation they submit for."""
    grpc_targets: dict[str, list[str]]
    db: asyncpg.Pool
    tokens: dict[str, str]
    """A server-admin token of each organisation."""

    def client(self, organisation: str, url: str | None = None) -> httpx.AsyncClient:
        """A REST client acting for `organisation` (through its first replica unless `url`)."""
        return httpx.AsyncClient(
            base_url=url or self.rest_urls[organisation][0], timeout=30, headers=bearer(self.tokens[organisation])
        )


async def create_organisations(dsn: str, names: Sequence[str]) -> dict[str, str]:
    """The organisations, and a server-admin token of each."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO organisations (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", [(n,) for n in names]
        )
        tokens = {}
        for name in names:
            _, tokens[name] = await bootstrap.create_token(
                conn, organisation=name, scope=Scope.SERVER_ADMIN, name="admission tests", created_by="tests"
            )
        return tokens
    finally:
        await conn.close()


@asynccontextmanager
async def admission_stack(
    *,
    nats_url: str,
    pg_dsn: str,
    bus_prefix: str,
    work_dir: Path,
    replicas: Sequence[str],
    max_active: int = 1000,
    loops: dict[str, LoopLimits] | None = None,
    launchers: int = 2,
) -> AsyncIterator[AdmissionStack]:
    """One api replica per entry of `replicas` (the organisation it submits for), launchers and logs."""
    await migrate_all(pg_dsn)
    tokens = await create_organisations(pg_dsn, sorted(set(replicas)))
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    shared: dict[str, object] = {
        "nats": nats,
        "postgres": postgres,
        "telemetry": TelemetrySettings(exporter="memory"),
        "lifecycle": LifecycleSettings(graceful_timeout=10.0),
    }
    admission = AdmissionSettings(
        max_active=max_active, interval=1.0, **({"loops": loops} if loops is not None else {})
    )
    async with AsyncExitStack() as stack:
        runtimes = [
            await stack.enter_async_context(
                open_runtime(name=f"api{i}", nats=nats, postgres=postgres, telemetry=TelemetrySettings())
            )
            for i in range(len(replicas))
        ]
        components: list[Component] = [*logs_app.build_components(LogsSettings(**shared), runtimes[0])]  # type: ignore[arg-type]
        components += [
            launcher_app.build(
                LauncherSettings(work_dir=work_dir / f"launcher{i}", grace_period=2.0, **shared),  # type: ignore[arg-type]
                runtimes[0],
            )
            for i in range(launchers)
        ]
        apis = [
            api_app.build(
                ApiSettings(rest_port=0, grpc_port=0, organisation=org, admission=admission, **shared),  # type: ignore[arg-type]
                runtime,
            )
            for org, runtime in zip(replicas, runtimes, strict=True)
        ]
        for api in apis:
            components += api.components
        supervisor = Supervisor()
        ready = asyncio.Event()

        async def on_ready() -> None:
            ready.set()

        task = asyncio.create_task(
            run_components(components, graceful_timeout=10.0, supervisor=supervisor, on_ready=on_ready())
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
            raise RuntimeError("stack stopped during start")
        urls: dict[str, list[str]] = {}
        targets: dict[str, list[str]] = {}
        for org, api in zip(replicas, apis, strict=True):
            urls.setdefault(org, []).append(api.rest.url)
            targets.setdefault(org, []).append(api.grpc.target)
        db = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
        try:
            yield AdmissionStack(urls, targets, db, tokens)
        finally:
            await db.close()
            supervisor.stop.set()
            with contextlib.suppress(Exception):
                await task
            await _delete_streams(runtimes[0])
            assert supervisor.failure is None, f"a service task failed: {supervisor.failure!r}"


async def submit(client: httpx.AsyncClient, command: str, **spec: object) -> dict[str, object]:
    response = await client.post("/v1/runs", json={"command": command, **spec})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body
