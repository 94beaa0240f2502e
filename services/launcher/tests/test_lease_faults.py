"""Leases across database faults, against the real PostgreSQL and NATS: a claim whose response was lost is still
this launcher's to run, and a launcher that is alive and renewing never has its run reported lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from ame import codecs
from ame.contracts.run.v1 import run_pb2
from ame.domain import RunSpec, RunState, new_run_id
from ame_launcher import app as launcher_app
from ame_launcher.launches import Launcher
from ame_launcher.repositories import leases
from ame_launcher.settings import LauncherSettings
from ame_platform.bus.publisher import headers_for
from ame_platform.embedded import EmbeddedPostgres
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_server.server import migrate_all
from tests.db_outage import database_outage
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _launch(run_id: str, command: str) -> bytes:
    spec = RunSpec(project="leases", task="faults", command=command)
    return run_pb2.LaunchRun(
        run_id=run_id, attempt=1, organisation="default", spec=codecs.run_spec_to_pb(spec)
    ).SerializeToString()


@asynccontextmanager
async def _launchers(
    count: int, nats_url: str, pg_dsn: str, bus_prefix: str, work_dir: Path, **settings: object
) -> AsyncIterator[tuple[Runtime, list[Launcher]]]:
    """`count` launcher replicas, each with its own NATS connection and pool, as separate processes would have."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=4)
    async with AsyncExitStack() as stack:
        runtimes = [
            await stack.enter_async_context(
                open_runtime(name=f"launcher{i}", nats=nats, postgres=postgres, telemetry=TelemetrySettings())
            )
            for i in range(count)
        ]
        launchers = [
            launcher_app.build(
                LauncherSettings(
                    work_dir=work_dir / f"launcher{i}",
                    grace_period=2.0,
                    nats=nats,
                    postgres=postgres,
                    lifecycle=LifecycleSettings(),
                    **settings,  # type: ignore[arg-type]
                ),
                runtime,
            )
            for i, runtime in enumerate(runtimes)
        ]
        supervisor = Supervisor()
        for launcher in launchers:
            await launcher.start(supervisor)
        try:
            yield runtimes[0], launchers
        finally:
            for launcher in launchers:
                await launcher.drain()
            await supervisor.cancel_all()
        assert supervisor.failure is None, f"a launcher task failed: {supervisor.failure!r}"


async def _lease(runtime: Runtime, run_id: str) -> asyncpg.Record | None:
    async with runtime.pool.acquire() as conn:
        return await conn.fetchrow(
            "SELECT launcher_id, state, final_state, pgid FROM leases WHERE run_id = $1::uuid", run_id
        )


async def test_a_claim_repeated_by_its_launcher_holds_and_no_other_launcher_takes_it(pg_dsn: str) -> None:
    await migrate_all(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        run_id = new_run_id()

        async def claim(launcher_id: str) -> bool:
            return await leases.claim_lease(
                conn,
                run_id=run_id,
                attempt=1,
                launcher_id=launcher_id,
                backend="local",
                project="p",
                task="t",
                ttl_seconds=30,
            )

        # The first claim committed and its response was lost: the same launcher claiming again holds it.
        assert await claim("launcher-a")
        assert await claim("launcher-a")
        assert not await claim("launcher-b")
        assert await conn.fetchval("SELECT count(*) FROM leases WHERE run_id = $1::uuid", run_id) == 1

        # Once it finished the attempt, nobody claims it again, not even the launcher that ran it.
        # Only the holder finishes it (a launcher whose lease was taken over is fenced out).
        assert not await leases.finish_lease(conn, run_id=run_id, attempt=1, launcher_id="launcher-b", final_state="x")
        assert await leases.finish_lease(
            conn, run_id=run_id, attempt=1, launcher_id="launcher-a", final_state="succeeded"
        )
        assert not await leases.finish_lease(
            conn, run_id=run_id, attempt=1, launcher_id="launcher-a", final_state="failed"
        )
        assert not await claim("launcher-a")
        row = await conn.fetchrow("SELECT state, final_state FROM leases WHERE run_id = $1::uuid", run_id)
        assert row is not None
        assert (row["state"], row["final_state"]) == ("finished", "succeeded")

        # A lease given back unstarted is free for any launcher; only its holder can give it back.
        other = new_run_id()
        run_id = other
        assert await claim("launcher-a")
        await leases.release_unstarted(conn, run_id=other, attempt=1, launcher_id="launcher-b")
        assert not await claim("launcher-b")
        await leases.release_unstarted(conn, run_id=other, attempt=1, launcher_id="launcher-a")
        assert await claim("launcher-b")
    finally:
        await conn.close()


async def test_a_redelivery_after_a_committed_claim_runs_the_run(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    async with _launchers(1, nats_url, pg_dsn, bus_prefix, tmp_path) as (runtime, [launcher]):
        run_id = new_run_id()
        # The claim of the first delivery committed; the launcher never heard back, so it holds no run.
        async with runtime.pool.acquire() as conn:
            assert await leases.claim_lease(
                conn,
                run_id=run_id,
                attempt=1,
                launcher_id=launcher.launcher_id,
                backend="local",
                project="leases",
                task="faults",
                ttl_seconds=30,
            )
        assert launcher.active_runs == 0
        marker = tmp_path / "ran"
        ack = await runtime.js.publish(
            runtime.names.run_launch, _launch(run_id, f"touch {marker}"), headers=headers_for(f"launch:{run_id}:1")
        )
        assert not ack.duplicate

        async def finished() -> bool:
            lease = await _lease(runtime, run_id)
            assert lease is not None
            return bool(lease["state"] == "finished")

        await wait_until(finished, message="the redelivered run to finish")
        lease = await _lease(runtime, run_id)
        assert lease is not None
        assert (lease["launcher_id"], lease["final_state"]) == (launcher.launcher_id, "succeeded")
        assert marker.exists()


@pytest.mark.slow
async def test_a_live_launcher_keeps_its_run_through_an_outage_longer_than_the_lease(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    ttl = 1.5
    fast = {"lease_ttl": ttl, "heartbeat_interval": 0.2, "reconcile_interval": 0.2}
    async with _launchers(2, nats_url, pg_dsn, bus_prefix, tmp_path, **fast) as (runtime, launchers):
        lost: list[str] = []

        async def on_lost(msg: object) -> None:
            lost.append(codecs.parse_state_changed(msg.data).run_id)  # type: ignore[attr-defined]

        sub = await runtime.nc.subscribe(runtime.names.run_state(RunState.LOST), cb=on_lost)
        release = tmp_path / "release"
        run_id = new_run_id()
        await runtime.js.publish(
            runtime.names.run_launch,
            _launch(run_id, f"until [ -e {release} ]; do sleep 0.02; done"),
            headers=headers_for(f"launch:{run_id}:1"),
        )

        async def started() -> bool:
            lease = await _lease(runtime, run_id)
            return lease is not None and lease["pgid"] is not None

        await wait_until(started, message="the run to start")
        holder = next(launcher for launcher in launchers if launcher.active_runs == 1)
        other = next(launcher for launcher in launchers if launcher is not holder)

        async with database_outage(postgres_server, pg_dsn):
            # The outage's length, not a synchronisation: long enough for the lease to lapse unrenewed.
            await asyncio.sleep(ttl * 2)

        # The database is back. The other replica's reconciler runs at once, before or after the holder's
        # heartbeat: either way the run is not reported lost while its launcher is alive.
        for _ in range(10):
            assert await _reconcile_or_fault(other) == 0
        release.touch()

        async def finished() -> bool:
            lease = await _lease(runtime, run_id)
            return lease is not None and lease["state"] == "finished"

        await wait_until(finished, timeout=20, message="the run to finish")
        lease = await _lease(runtime, run_id)
        assert lease is not None
        assert (lease["launcher_id"], lease["final_state"]) == (holder.launcher_id, "succeeded")
        await runtime.nc.flush()
        await sub.unsubscribe()
        assert lost == []


async def _reconcile_or_fault(launcher: Launcher) -> int:
    try:
        return await launcher.reconcile()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0  # the pool is still reconnecting
