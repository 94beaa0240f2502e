"""Stopping a launcher whose run slots are all busy: it ends its runs, hands waiting commands back, and
returns well within its budget; a stopping launcher judges no one's lease, and none of another backend."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from ame import bus_messages
from ame.domain import RunSpec, new_run_id
from ame_launcher import app as launcher_app
from ame_launcher.launches import Launcher
from ame_launcher.settings import LauncherSettings
from ame_platform.bus.publisher import headers_for
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_server.server import migrate_all
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def test_drain_with_every_slot_busy_ends_runs_and_hands_back_commands(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn))
    async with open_runtime(name="drain", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as runtime:
        settings = LauncherSettings(
            max_concurrent_runs=1,
            grace_period=2.0,
            work_dir=tmp_path,
            nats=nats,
            postgres=postgres,
            lifecycle=LifecycleSettings(),
        )
        launcher = launcher_app.build(settings, runtime)
        supervisor = Supervisor()
        await launcher.start(supervisor)
        run_ids = [new_run_id(), new_run_id()]
        for run_id in run_ids:
            payload = bus_messages.encode_launch(run_id, 1, "default", RunSpec(command="sleep 300"))
            await runtime.js.publish(runtime.names.run_launch, payload, headers=headers_for(f"launch:{run_id}:1"))
        await wait_until(lambda: launcher.active_runs == 1, message="the first run to hold the only slot")

        started = time.monotonic()
        await asyncio.wait_for(launcher.drain(), timeout=15)
        assert time.monotonic() - started < 8
        await supervisor.cancel_all()

        async with runtime.pool.acquire() as conn:
            leases = {
                str(r["run_id"]): r["final_state"]
                for r in await conn.fetch("SELECT run_id, final_state FROM leases WHERE state = 'finished'")
            }
        assert leases == {run_ids[0]: "cancelled"}
        # The second command went back to the work queue for another replica.
        info = await runtime.js.stream_info(runtime.names.commands_stream)
        assert info.state.messages == 1


async def _expired_lease(runtime: Runtime, *, backend: str, launcher_id: str) -> str:
    run_id = new_run_id()
    async with runtime.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO leases (run_id, attempt, launcher_id, backend, project, task, expires_at)
               VALUES ($1::uuid, 1, $2, $3, 'p', 't', now() - interval '1 minute')""",
            run_id,
            launcher_id,
            backend,
        )
    return run_id


async def _lease_row(runtime: Runtime, run_id: str) -> tuple[str, str, str | None]:
    async with runtime.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, launcher_id, final_state FROM leases WHERE run_id = $1::uuid", run_id)
    assert row is not None
    return row["state"], row["launcher_id"], row["final_state"]


async def test_a_stopping_launcher_and_one_of_another_backend_leave_expired_leases_alone(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn))
    async with open_runtime(name="drain", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as runtime:

        def launcher(name: str) -> Launcher:
            settings = LauncherSettings(
                work_dir=tmp_path / name,
                reconcile_grace=0.0,
                # One pass as it starts, then only the passes this test makes.
                reconcile_interval=3600.0,
                nats=nats,
                postgres=postgres,
                lifecycle=LifecycleSettings(),
            )
            return launcher_app.build(settings, runtime)

        supervisor = Supervisor()
        stopping, staying = launcher("stopping"), launcher("staying")
        await stopping.start(supervisor)
        await staying.start(supervisor)
        await stopping.drain()

        # A lease another launcher just handed back: a stopping launcher adopts nothing, so it judges nothing.
        handed = await _expired_lease(runtime, backend="local", launcher_id="launcher-handing-back")
        assert await stopping.reconcile() == 0
        assert await _lease_row(runtime, handed) == ("active", "launcher-handing-back", None)

        # A pod's lease is the kubernetes launchers' to adopt: a local launcher reports only its own backend's.
        pod = await _expired_lease(runtime, backend="kubernetes", launcher_id="launcher-of-pods")
        assert await staying.reconcile() == 1
        assert await _lease_row(runtime, handed) == ("finished", "launcher-handing-back", "lost")
        assert await _lease_row(runtime, pod) == ("active", "launcher-of-pods", None)

        await staying.drain()
        await supervisor.cancel_all()
