"""Model trainings sequenced by the scheduler, against real NATS and PostgreSQL: the training run is asked for once
however often its request arrives, and the validation run once the training run succeeded, across a restart, with
the run ids fixed before either run exists."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

from ame import codecs, model_messages
from ame.domain import RunSpec, RunState, new_run_id
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_scheduler.settings import SchedulerSettings
from ame_server.server import migrate_all
from services.scheduler.tests.replica import scheduler_replica
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _settings(nats: NatsSettings, postgres: PostgresSettings) -> SchedulerSettings:
    return SchedulerSettings(
        nats=nats,
        postgres=postgres,
        telemetry=TelemetrySettings(exporter="memory"),
        lifecycle=LifecycleSettings(graceful_timeout=10.0),
    )


@pytest.fixture
def infra(nats_url: str, pg_dsn: str, bus_prefix: str) -> tuple[NatsSettings, PostgresSettings]:
    return NatsSettings(url=nats_url, prefix=bus_prefix), PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=4)


async def _requests(runtime: Runtime) -> list[model_messages.RunRequest]:
    """Every ModelRunRequested on the stream (the msg ids dedupe a repeated publish within the window)."""
    sub = await runtime.js.pull_subscribe(runtime.names.model_run_requested, stream=runtime.names.events_stream)
    found: list[model_messages.RunRequest] = []
    try:
        while True:
            try:
                batch = await sub.fetch(10, timeout=0.5)
            except TimeoutError:
                return found
            for msg in batch:
                found.append(model_messages.parse_run_requested(msg.data))
                await msg.ack()
    finally:
        await sub.unsubscribe()


def _count(stage: str) -> Callable[[list[model_messages.RunRequest]], int]:
    return lambda requests: sum(1 for r in requests if r.stage == stage)


async def test_training_then_validation_once_each_across_a_restart(
    infra: tuple[NatsSettings, PostgresSettings], pg_dsn: str
) -> None:
    await migrate_all(pg_dsn)
    nats, postgres = infra
    settings = _settings(nats, postgres)
    version_id = new_run_id()
    request = model_messages.TrainRequest(
        model_version_id=version_id,
        organisation="default",
        project="demo",
        model="recommender",
        number=1,
        training=RunSpec(project="demo", task="train", command="python train.py"),
        validation=RunSpec(project="demo", task="validate", command="python validate.py"),
    )
    payload = model_messages.encode_train_requested(request)
    async with open_runtime(
        name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings(exporter="memory")
    ) as runtime:
        names = runtime.names
        async with scheduler_replica(settings, runtime):
            await runtime.js.publish(
                names.model_train_requested, payload, headers=headers_for(model_messages.requested_msg_id(version_id))
            )
            # A replayed request (another msg id) finds the training recorded: the same run is asked for.
            await runtime.js.publish(names.model_train_requested, payload, headers=headers_for(f"replay:{version_id}"))
            requests = await wait_until(
                lambda: _trained(runtime), timeout=20, message="the training run to be asked for"
            )
        [train] = [r for r in requests if r.stage == model_messages.TRAIN]
        assert train.key == f"model:{version_id}:train" and train.spec.task == "train"
        assert train.spec.input_run_id == ""

        # The training run succeeds while no scheduler runs; the restarted one asks for the validation, once.
        ended = codecs.state_changed_pb(train.run_id, 1, RunState.SUCCEEDED, 0, "").SerializeToString()
        for msg_id in (f"state:{train.run_id}:1:succeeded", f"replay:{train.run_id}"):
            await runtime.js.publish(names.run_state(RunState.SUCCEEDED), ended, headers=headers_for(msg_id))
        # Another run's end is no model's: nothing follows it.
        other = codecs.state_changed_pb(new_run_id(), 1, RunState.SUCCEEDED, 0, "").SerializeToString()
        await runtime.js.publish(names.run_state(RunState.SUCCEEDED), other, headers=headers_for("other"))
        async with scheduler_replica(settings, runtime):
            await wait_until(lambda: _validated(runtime), timeout=20, message="the validation run to be asked for")
        requests = await _requests(runtime)
        assert (_count("train")(requests), _count("validate")(requests)) == (1, 1), requests
        [validate] = [r for r in requests if r.stage == model_messages.VALIDATE]
        assert validate.key == f"model:{version_id}:validate"
        assert validate.spec.task == "validate" and validate.spec.input_run_id == train.run_id
        assert validate.run_id not in ("", train.run_id)


async def _trained(runtime: Runtime) -> list[model_messages.RunRequest] | None:
    async with runtime.pool.acquire() as conn:
        done = await conn.fetchval("SELECT count(*) FROM model_trainings WHERE training_requested_at IS NOT NULL")
    return await _requests(runtime) if done else None


async def _validated(runtime: Runtime) -> bool:
    async with runtime.pool.acquire() as conn:
        return bool(
            await conn.fetchval("SELECT count(*) FROM model_trainings WHERE validation_requested_at IS NOT NULL")
        )
