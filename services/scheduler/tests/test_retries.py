"""Retries kept by the scheduler, against real NATS and PostgreSQL: a retry asked for before a restart is launched
after it, once; a run cancelled during its backoff is not launched again."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ame import bus_messages, codecs
from ame.domain import RunSpec, RunState, new_run_id
from ame_platform.bus.publisher import headers_for
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_scheduler.retries import Retrier, backoff_seconds
from ame_scheduler.settings import SchedulerSettings
from ame_server.server import migrate_all
from services.scheduler.tests.replica import scheduler_replica
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _settings(nats: NatsSettings, postgres: PostgresSettings, backoff: float) -> SchedulerSettings:
    return SchedulerSettings(
        nats=nats,
        postgres=postgres,
        telemetry=TelemetrySettings(exporter="memory"),
        lifecycle=LifecycleSettings(graceful_timeout=10.0),
        retry_backoff=backoff,
        retry_poll_interval=0.05,
    )


async def _request_retry(runtime: Runtime, run_id: str, attempt: int, msg_id: str) -> None:
    launch = bus_messages.encode_launch(run_id, attempt, "default", RunSpec(command="false", retries=2))
    payload = bus_messages.encode_retry_requested(run_id, attempt, RunState.FAILED, launch)
    await runtime.js.publish(runtime.names.run_retry_requested, payload, headers=headers_for(msg_id))


async def _retry_state(runtime: Runtime, run_id: str, attempt: int) -> str | None:
    async with runtime.pool.acquire() as conn:
        value = await conn.fetchval(
            "SELECT state FROM run_retries WHERE run_id = $1::uuid AND attempt = $2", run_id, attempt
        )
    return str(value) if value is not None else None


async def _launches(runtime: Runtime) -> int:
    # No launcher runs here: every launch command published stays on the (work-queue) stream.
    return int((await runtime.js.stream_info(runtime.names.commands_stream)).state.messages)


@pytest.fixture
def infra(nats_url: str, pg_dsn: str, bus_prefix: str) -> tuple[NatsSettings, PostgresSettings]:
    return NatsSettings(url=nats_url, prefix=bus_prefix), PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=4)


async def test_a_retry_asked_for_before_a_restart_is_launched_after_it_once(
    infra: tuple[NatsSettings, PostgresSettings], pg_dsn: str
) -> None:
    await migrate_all(pg_dsn)
    nats, postgres = infra
    # Long enough that the first replica is surely gone before the retry is due, whatever the machine's load.
    settings = _settings(nats, postgres, backoff=4.0)
    run_id = new_run_id()
    async with open_runtime(
        name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings(exporter="memory")
    ) as runtime:
        async with scheduler_replica(settings, runtime):
            await _request_retry(runtime, run_id, 2, bus_messages.retry_msg_id(run_id, 2))
            await wait_until(lambda: _retry_state(runtime, run_id, 2), message="the scheduler to record the retry")
        assert await _retry_state(runtime, run_id, 2) == "pending"
        assert await _launches(runtime) == 0

        # The same request again (as a replayed dead letter would be, under another msg id) records nothing new.
        await _request_retry(runtime, run_id, 2, f"replay:{run_id}")
        async with scheduler_replica(settings, runtime):
            await wait_until(
                lambda: _launched(runtime, run_id),
                timeout=30,
                message="the restarted scheduler to launch the retry",
            )
            # A further pass (another replica, say) finds nothing due.
            assert await Retrier(runtime, settings).launch_due() == 0
        assert await _launches(runtime) == 1
        raw = await runtime.js.get_last_msg(runtime.names.commands_stream, runtime.names.run_launch)
        command = bus_messages.parse_launch(raw.data or b"")
        assert (command.run_id, command.attempt, command.spec.retries) == (run_id, 2, 2)
        assert raw.headers is not None and raw.headers["Nats-Msg-Id"] == f"launch:{run_id}:2"


async def _launched(runtime: Runtime, run_id: str) -> bool:
    return await _retry_state(runtime, run_id, 2) == "launched"


async def test_a_run_cancelled_during_its_backoff_is_not_launched_and_its_attempt_ends_cancelled(
    infra: tuple[NatsSettings, PostgresSettings], pg_dsn: str
) -> None:
    await migrate_all(pg_dsn)
    nats, postgres = infra
    settings = _settings(nats, postgres, backoff=0.5)
    run_id = new_run_id()
    async with open_runtime(
        name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings(exporter="memory")
    ) as runtime:
        names = runtime.names
        # The cancel crossed the failure of attempt 1: it names attempt 1, and arrives before the retry request.
        await runtime.js.publish(
            names.run_cancel_requested(run_id),
            bus_messages.encode_cancel(run_id, 1, "stop it"),
            headers=headers_for(bus_messages.cancel_msg_id(run_id, 1)),
        )
        cancelled_events = await runtime.js.pull_subscribe(
            names.run_state(RunState.CANCELLED), stream=names.events_stream
        )
        async with scheduler_replica(settings, runtime):
            await _request_retry(runtime, run_id, 2, bus_messages.retry_msg_id(run_id, 2))
            await wait_until(
                lambda: _is_cancelled(runtime, run_id), timeout=30, message="the retry to be dropped as cancelled"
            )
        assert await _launches(runtime) == 0
        [msg] = await cancelled_events.fetch(1, timeout=5)
        event = codecs.parse_state_changed(msg.data)
        assert (event.run_id, event.attempt, event.state) == (run_id, 2, RunState.CANCELLED)
        await cancelled_events.unsubscribe()


async def _is_cancelled(runtime: Runtime, run_id: str) -> bool:
    return await _retry_state(runtime, run_id, 2) == "cancelled"


async def test_backoff_doubles_from_the_first_retry_up_to_the_cap() -> None:
    settings = SchedulerSettings(retry_backoff=2.0, retry_backoff_factor=2.0, retry_backoff_max=10.0)
    assert [backoff_seconds(settings, attempt) for attempt in (2, 3, 4, 5, 50)] == [2.0, 4.0, 8.0, 10.0, 10.0]
