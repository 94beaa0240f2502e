"""A rolling deploy as a replica of the old release sees it: the newer release's migrate Job has run, and the old
replica (re)starts against that database. It serves when the newer migrations allow it, and refuses clearly when
they do not."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from ame_platform.embedded._process import free_tcp_port
from tests.fault.services import service_env
from tests.integration.migrating import migrate_services
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]

NEWER = "20991231000000"  # a migration of a release this code predates


async def _record_newer_migration(dsn: str, name: str, min_code: str) -> None:
    """What the newer release's `ame-logs migrate` leaves in the bookkeeping table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM ame_schema_migrations WHERE version = $1", NEWER)
        await conn.execute(
            "INSERT INTO ame_schema_migrations (service, version, name, checksum, min_code)"
            " VALUES ('logs', $1, $2, 'sha', $3)",
            NEWER,
            name,
            min_code,
        )
    finally:
        await conn.close()


async def test_an_old_replica_serves_a_compatible_newer_schema_and_refuses_a_breaking_one(
    nats_url: str, bus_prefix: str, pg_dsn: str, tmp_path: Path
) -> None:
    port = free_tcp_port()
    env = service_env(
        nats_url=nats_url, prefix=bus_prefix, dsn=pg_dsn, work_dir=tmp_path, AME_LOGS_HEALTH_PORT=str(port)
    )
    await migrate_services(pg_dsn, ("logs",))

    await _record_newer_migration(pg_dsn, "add_index", min_code="")  # `-- ame: compatible`
    log_path = tmp_path / "logs.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "ame_logs"], env=env, stdout=log, stderr=log)
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def ready() -> bool:
                assert process.poll() is None, log_path.read_text()[-2000:]
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=60, interval=0.1, message="the old replica to be ready")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"newer migration(s) that this version does not ship but works with: {NEWER}_add_index" in (
        log_path.read_text()
    )

    await _record_newer_migration(pg_dsn, "drop_chunks", min_code=NEWER)  # `-- ame: breaking`
    refused = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ame_logs"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 3
    assert (
        f"ame-logs: logs: the database has migrations this version does not know and cannot run with: "
        f"{NEWER}_drop_chunks (breaking)" in refused.stderr
    )
    assert f"deploy a version that ships {NEWER} or later" in refused.stderr
