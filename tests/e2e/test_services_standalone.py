"""Each service as its own process against one NATS and one PostgreSQL, as deployed: migrate jobs first, then
api, logs, scheduler and two launcher replicas. A burst of runs goes through; each runs exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import aio_channel, discover_token
from tests.integration.clients import py
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

SERVICES = ["api", "logs", "scheduler", "launcher"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service_env(nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_NATS_URL=nats_url,
        AME_NATS_PREFIX=bus_prefix,
        AME_POSTGRES_DSN=pg_dsn,
        AME_API_GRPC_PORT=str(_free_port()),
        AME_API_REST_PORT="0",
        AME_LAUNCHER_WORK_DIR=str(tmp_path / "work"),
        AME_LIFECYCLE_GRACEFUL_TIMEOUT="10s",
        # The token the test's client sends, accepted by the api as its bootstrap server-admin token.
        AME_API_BOOTSTRAP_TOKEN=discover_token() or "",
    )
    return env


@pytest.fixture
def processes(service_env: dict[str, str], tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _module(service: str) -> list[str]:
    return [sys.executable, "-m", f"ame_{service}"]


async def test_services_run_standalone_with_two_launcher_replicas(
    service_env: dict[str, str], processes: list[subprocess.Popen[bytes]], tmp_path: Path, pg_dsn: str
) -> None:
    # A service refuses to serve before its migrations are applied, naming the command to run.
    refused = subprocess.run([*_module("api")], env=service_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3 and "ame-api migrate" in refused.stderr

    for service in SERVICES:
        done = subprocess.run(
            [*_module(service), "migrate"], env=service_env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    config = subprocess.run(
        [*_module("api"), "check-config"], env=service_env, capture_output=True, text=True, timeout=60
    )
    assert config.returncode == 0 and pg_dsn not in config.stdout  # the DSN is a secret

    for service in [*SERVICES, "launcher"]:
        with (tmp_path / f"{service}-{len(processes)}.log").open("wb") as log:
            processes.append(subprocess.Popen(_module(service), env=service_env, stdout=log, stderr=log))

    target = f"127.0.0.1:{service_env['AME_API_GRPC_PORT']}"
    async with aio_channel(target, discover_token()) as channel:
        stub = ame_service_pb2_grpc.AmeServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=120)
        n = 20
        runs = await asyncio.gather(
            *(
                stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command=py(f"print({i})"))))
                for i in range(n)
            )
        )
        for i, response in enumerate(runs):
            lines = [
                e.line.text
                async for e in stub.FollowLogs(ame_service_pb2.FollowLogsRequest(run_id=response.run.id))
                if e.HasField("line")
            ]
            assert lines == [str(i)]

    conn = await asyncpg.connect(pg_dsn)
    try:

        async def all_succeeded() -> bool:
            return await conn.fetchval("SELECT count(*) FROM runs WHERE state = 'succeeded'") == n

        await wait_until(all_succeeded, timeout=120, message="every run succeeded in the registry")
        per_run = await conn.fetch("SELECT count(*) AS n FROM leases GROUP BY run_id")
        assert len(per_run) == n and {r["n"] for r in per_run} == {1}
    finally:
        await conn.close()

    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(timeout=30) for proc in processes]
    assert codes == [0] * len(processes), [p.args for p in processes]
