"""Liveness and readiness probes against real NATS and PostgreSQL, through the real lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from ame_platform.health import Health, HealthServer
from ame_platform.lifecycle import Supervisor, run_components
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import NatsSettings, PostgresSettings, TelemetrySettings
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


class Gate:
    """A component whose start and drain wait until the test lets them finish."""

    name = "gate"

    def __init__(self) -> None:
        self.may_start = asyncio.Event()
        self.may_finish_drain = asyncio.Event()
        self.draining = asyncio.Event()

    async def start(self, supervisor: Supervisor) -> None:
        await self.may_start.wait()

    async def drain(self) -> None:
        self.draining.set()
        await self.may_finish_drain.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def runtime(nats_url: str, bus_prefix: str, pg_dsn: str) -> AsyncIterator[Runtime]:
    async with open_runtime(
        name="health-test",
        nats=NatsSettings(url=nats_url, prefix=bus_prefix),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
        telemetry=TelemetrySettings(),
    ) as rt:
        yield rt


async def _get(client: httpx.AsyncClient, path: str) -> tuple[int, dict[str, object]]:
    response = await client.get(path)
    return response.status_code, response.json()


async def test_ready_only_between_start_and_drain(runtime: Runtime) -> None:
    supervisor = Supervisor()
    health = Health.for_runtime(supervisor, runtime)
    gate = Gate()
    async with (
        HealthServer(health, "127.0.0.1", 0) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5) as client,
    ):
        running = asyncio.create_task(
            run_components(
                [gate], graceful_timeout=10, supervisor=supervisor, on_ready=health.mark_started_when_ready()
            )
        )
        # Alive while a component is still starting, but not ready.
        assert await _get(client, "/livez") == (200, {"status": "alive"})
        assert await _get(client, "/healthz") == (200, {"status": "alive"})
        assert await _get(client, "/readyz") == (503, {"status": "not ready", "reasons": {"process": "starting"}})
        gate.may_start.set()

        async def ready() -> bool:
            return await _get(client, "/readyz") == (200, {"status": "ready"})

        await wait_until(ready, message="readiness once every component has started")
        supervisor.stop.set()
        await gate.draining.wait()
        # While a component drains, the probes still answer: alive, not ready.
        assert await _get(client, "/readyz") == (503, {"status": "not ready", "reasons": {"process": "draining"}})
        assert (await _get(client, "/livez"))[0] == 200
        gate.may_finish_drain.set()
        assert await asyncio.wait_for(running, timeout=10) == 0
    async with httpx.AsyncClient(timeout=5) as closed:
        with pytest.raises(httpx.ConnectError):
            await closed.get(server.url + "/livez")


async def test_not_ready_without_nats_or_postgres(runtime: Runtime) -> None:
    supervisor = Supervisor()
    health = Health.for_runtime(supervisor, runtime)
    health.mark_started()
    assert await health.readiness() == {}
    await runtime.pool.close()
    assert await health.readiness() == {"postgres": "unavailable (InterfaceError)"}
    await runtime.nc.close()
    assert await health.readiness() == {"postgres": "unavailable (InterfaceError)", "nats": "not connected"}


async def test_bad_requests_get_a_clear_4xx(runtime: Runtime) -> None:
    async with HealthServer(Health(Supervisor()), "127.0.0.1", 0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            status, body = await _get(client, "/metrics")
            assert status == 404
            assert "try /livez or /readyz" in str(body["error"])
            response = await client.post("/readyz", content=b"x")
            assert response.status_code == 405
            assert response.json() == {"error": "POST not allowed; use GET"}
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NONSENSE\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request")
        assert b"malformed request line" in answer
