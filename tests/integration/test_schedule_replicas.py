"""Three scheduler replicas, as separate processes on the shared simulated clock, with one SIGKILLed every few
slots over 100 slots of an every-minute schedule: exactly 100 runs, one per slot, none missed.

The replicas are `python -m ame_scheduler` (a simulated minute a real second); the api's triggers consumer runs
in this process and turns the fires into runs (no launcher: they stay queued)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from ame.domain import RunSpec
from ame_api import app as api_app
from ame_api.settings import ApiSettings
from ame_platform.lifecycle import Supervisor, run_components
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_scheduler.repositories import schedules
from ame_server.server import migrate_all
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

RATE = 60.0
SLOTS = 100
MINUTE = timedelta(minutes=1)


@pytest_asyncio.fixture(loop_scope="session")
async def triggers(nats_url: str, pg_dsn: str, bus_prefix: str) -> AsyncIterator[Runtime]:
    """The api's triggers consumer (and outbox relay) against the test's database and bus namespace."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as runtime:
        settings = ApiSettings(
            rest_port=0,
            grpc_port=0,
            nats=nats,
            postgres=postgres,
            lifecycle=LifecycleSettings(graceful_timeout=5.0),
        )  # type: ignore[call-arg]
        api = api_app.build(settings, runtime)
        supervisor = Supervisor()
        task = asyncio.create_task(
            run_components([api.triggers, api.relay, api.admission], graceful_timeout=5.0, supervisor=supervisor)
        )
        try:
            yield runtime
        finally:
            supervisor.stop.set()
            await task


@pytest.fixture
def replicas() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _recorded(runtime: Runtime, schedule_id: str, first: datetime) -> tuple[int, int]:
    """(fired, missed) slots of the window recorded so far."""
    async with runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE NOT missed) AS fired, count(*) FILTER (WHERE missed) AS missed
               FROM schedule_fires WHERE schedule_id = $1::uuid AND slot >= $2 AND slot < $3""",
            schedule_id,
            first,
            first + SLOTS * MINUTE,
        )
    return int(row["fired"]), int(row["missed"])


async def test_three_replicas_with_one_killed_every_few_slots_fire_each_of_100_slots_once(
    triggers: Runtime,
    replicas: list[subprocess.Popen[bytes]],
    nats_url: str,
    pg_dsn: str,
    bus_prefix: str,
    tmp_path: Path,
) -> None:
    start = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    anchor = datetime.now(UTC)
    # The first slot comes due 15 s (real) after the clock's anchor: on a loaded machine three Python processes
    # can take that long to start, and a slot nobody ticks for within AME_SCHEDULER_LATE_AFTER counts as missed.
    first = start + 15 * MINUTE
    async with triggers.pool.acquire() as conn:
        spec = RunSpec(project="replicas", task="every-minute", command="true")
        schedule_id = await schedules.create_schedule(
            conn, organisation="default", spec=spec, cron="* * * * *", next_fire_at=first
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_NATS_URL=nats_url,
        AME_NATS_PREFIX=bus_prefix,
        AME_POSTGRES_DSN=pg_dsn,
        AME_CLOCK_START=start.isoformat(),
        AME_CLOCK_ANCHOR=anchor.isoformat(),
        AME_CLOCK_RATE=str(RATE),
        AME_SCHEDULER_TICK_INTERVAL="0.05",
        # Ten simulated minutes (10 s): a slot is not late while one replica lives, even on a loaded machine.
        AME_SCHEDULER_LATE_AFTER="10m",
        AME_SCHEDULER_RELAY_AFTER="1s",
        AME_SCHEDULER_RELAY_INTERVAL="0.2",
        AME_LIFECYCLE_GRACEFUL_TIMEOUT="2s",
    )
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn() -> subprocess.Popen[bytes]:
        log = (logs / f"scheduler-{len(replicas)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "ame_scheduler"], env=env, stdout=log, stderr=log)
        replicas.append(proc)
        return proc

    alive = [spawn() for _ in range(3)]
    rng = random.Random(8)
    kills = 0
    handled = 0
    while handled < SLOTS:
        # Every five slots: a replica started at the last kill has had five seconds to come up, so two of the
        # three are always running when the third is killed.
        target = handled + 5

        async def advanced(target: int = target) -> int | None:
            done, missed = await _recorded(triggers, schedule_id, first)
            return done + missed if done + missed >= min(target, SLOTS) else None

        handled = await wait_until(advanced, timeout=60, interval=0.05, message=f"{target} slots handled")
        if handled >= SLOTS:
            break
        victim = alive.pop(rng.randrange(len(alive)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        alive.append(spawn())

    # One kill per five slots handled, 19 at most; on a loaded machine slots run ahead of a wait now and then, so
    # a kill lands every eight slots or fewer.
    assert kills >= 12, f"only {kills} replicas were killed"
    assert await _recorded(triggers, schedule_id, first) == (SLOTS, 0)

    async def hundred_runs() -> list[str] | None:
        async with triggers.pool.acquire() as conn:
            keys = await conn.fetch(
                "SELECT idempotency_key FROM runs WHERE project = 'replicas' AND trigger = 'schedule'"
            )
        end = first + SLOTS * MINUTE
        slot_of = {
            k["idempotency_key"]: datetime.fromtimestamp(int(k["idempotency_key"].rsplit(":", 1)[1]), UTC) for k in keys
        }
        window = [key for key, slot in slot_of.items() if first <= slot < end]
        return window if len(window) >= SLOTS else None

    window = await wait_until(hundred_runs, timeout=60, message="a run for each of the 100 slots")
    expected = {f"cron:{schedule_id}:{int((first + i * MINUTE).timestamp())}" for i in range(SLOTS)}
    assert len(window) == SLOTS and set(window) == expected
