"""Poison and permanently failing messages are dead-lettered with their reason; transient faults never are;
a dead letter replays to where it came from; a consumer rides out a real nats-server restart."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ame_platform.bus.connection import FOLLOWER_HEARTBEAT, connect
from ame_platform.bus.consumer import ConsumerSpec, Handler, Poison, PullConsumer
from ame_platform.bus.deadletters import DeadLetter, DeadLetterNotFound, DeadLetterQueue
from ame_platform.bus.publisher import MSG_ID, publish_until_stored
from ame_platform.bus.streams import declare_streams
from ame_platform.bus.subjects import BusNames
from ame_platform.embedded import EmbeddedNats
from ame_platform.lifecycle import Supervisor
from ame_platform.settings import NatsSettings, TelemetrySettings
from ame_platform.telemetry import Telemetry
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="session")]

DURABLE = "test-dlq"
MAX_FAILURES = 3


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def names(bus_prefix: str) -> BusNames:
    return BusNames(bus_prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def js(nc: Client, names: BusNames, nats_url: str) -> AsyncIterator[JetStreamContext]:
    jetstream = nc.jetstream()
    await declare_streams(jetstream, names, NatsSettings(url=nats_url, prefix=names.prefix))
    yield jetstream
    for stream in (names.commands_stream, names.events_stream, names.logs_stream, names.deadletter_stream):
        await jetstream.delete_stream(stream)


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry(TelemetrySettings(exporter="memory"), "test")


@pytest.fixture
def dlq(js: JetStreamContext, names: BusNames, tel: Telemetry) -> DeadLetterQueue:
    return DeadLetterQueue(js, names, max_failures=MAX_FAILURES, meter=tel.meter("test"))


@pytest_asyncio.fixture(loop_scope="session")
async def supervisor() -> AsyncIterator[Supervisor]:
    sup = Supervisor()
    yield sup
    await sup.cancel_all()
    assert sup.failure is None, f"a supervised task failed: {sup.failure!r}"


def _spec(names: BusNames) -> ConsumerSpec:
    return ConsumerSpec(
        stream=names.events_stream,
        durable=DURABLE,
        filter_subject=names.events_wildcard,
        concurrency=4,
        redeliver_delay=0.02,
        max_redeliver_delay=0.1,
    )


async def _start(
    js: JetStreamContext, names: BusNames, handler: Handler, dlq: DeadLetterQueue, supervisor: Supervisor
) -> PullConsumer:
    consumer = PullConsumer(js, _spec(names), handler, name="test", deadletters=dlq)
    await consumer.start(supervisor)
    return consumer


async def _publish(js: JetStreamContext, subject: str, body: bytes) -> int:
    ack = await js.publish(subject, body, headers={MSG_ID: body.decode(errors="replace"), "X-Kept": "yes"})
    return ack.seq


def _deadletter_count(tel: Telemetry) -> int:
    assert tel.metrics_memory is not None
    data = tel.metrics_memory.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "ame.bus.deadletters":
                    total += sum(int(p.value) for p in metric.data.data_points)  # type: ignore[union-attr]
    return total


async def _settled(js: JetStreamContext, names: BusNames) -> bool:
    info = await js.consumer_info(names.events_stream, DURABLE)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def test_poison_is_dead_lettered_with_its_reason_and_does_not_block_the_next(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, tel: Telemetry, supervisor: Supervisor
) -> None:
    calls: Counter[bytes] = Counter()

    async def handler(msg: Msg) -> None:
        calls[msg.data] += 1
        if msg.data == b"poison":
            raise Poison("undecodable state event\x00 with a NUL")

    consumer = await _start(js, names, handler, dlq, supervisor)
    subject = f"{names.prefix}.evt.run.succeeded"
    seq = await _publish(js, subject, b"poison")
    await _publish(js, subject, b"healthy")
    await wait_until(lambda: calls[b"healthy"] == 1, message="the message behind the poison to be handled")
    letters: list[DeadLetter] = await wait_until(lambda: dlq.list(), message="the dead letter")
    await wait_until(lambda: _settled(js, names), message="both messages to be settled")
    await consumer.drain()

    (letter,) = letters
    assert calls == {b"poison": 1, b"healthy": 1}  # dead-lettered at once, never redelivered
    assert letter.subject == subject and letter.payload == b"poison"
    assert letter.stream == names.events_stream and letter.stream_seq == seq
    assert letter.consumer == DURABLE and letter.deliveries == 1
    assert letter.reason == "poison: undecodable state event with a NUL"
    assert letter.headers["X-Kept"] == "yes" and letter.original_msg_id == "poison"
    assert _deadletter_count(tel) == 1


async def test_a_permanent_error_counts_then_dead_letters(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, supervisor: Supervisor
) -> None:
    calls: Counter[bytes] = Counter()

    async def handler(msg: Msg) -> None:
        calls[msg.data] += 1
        if msg.data == b"bad":
            exc = asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')
            exc.sqlstate = "22021"  # type: ignore[attr-defined]
            raise exc

    consumer = await _start(js, names, handler, dlq, supervisor)
    subject = f"{names.prefix}.evt.run.cancelled"
    await _publish(js, subject, b"bad")
    letters = await wait_until(lambda: dlq.list(), message="the dead letter")
    await _publish(js, subject, b"good")
    await wait_until(lambda: calls[b"good"] == 1, message="the next message")
    await wait_until(lambda: _settled(js, names), message="both messages to be settled")
    await consumer.drain()
    assert calls[b"bad"] == MAX_FAILURES
    assert letters[0].failures == MAX_FAILURES and letters[0].deliveries == MAX_FAILURES
    assert letters[0].reason.startswith("CharacterNotInRepertoireError: invalid byte sequence")


async def test_transient_faults_are_retried_past_the_limit_and_never_dead_lettered(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, supervisor: Supervisor
) -> None:
    calls: list[int] = []
    faults = [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.PostgresConnectionError("the database system is shutting down"),
        OSError("connection refused"),
    ] * 2

    async def handler(msg: Msg) -> None:
        calls.append(msg.metadata.num_delivered or 0)
        if len(calls) <= len(faults):
            raise faults[len(calls) - 1]

    consumer = await _start(js, names, handler, dlq, supervisor)
    await _publish(js, f"{names.prefix}.evt.run.failed", b"flaky")
    await wait_until(lambda: len(calls) == len(faults) + 1, message="the retry after the outage")
    await wait_until(lambda: _settled(js, names), message="the message to be acked")
    await consumer.drain()
    assert len(faults) > MAX_FAILURES
    assert calls == list(range(1, len(faults) + 2))
    assert await dlq.list() == []


async def test_replay_republishes_to_the_original_subject_and_removes_the_letter(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, supervisor: Supervisor
) -> None:
    broken = True
    handled: list[bytes] = []

    async def handler(msg: Msg) -> None:
        if broken:
            raise Poison("not yet")
        handled.append(msg.data)
        assert msg.headers is not None and msg.headers["X-Kept"] == "yes"

    consumer = await _start(js, names, handler, dlq, supervisor)
    subject = f"{names.prefix}.evt.run.timed_out"
    await _publish(js, subject, b"again")
    (letter,) = await wait_until(lambda: dlq.list(), message="the dead letter")
    broken = False
    replayed = await dlq.replay(letter.id)
    assert replayed.subject == subject
    await wait_until(lambda: handled == [b"again"], message="the replayed message to be handled")
    await consumer.drain()
    assert await dlq.list() == []
    with pytest.raises(DeadLetterNotFound):
        await dlq.replay(letter.id)


@pytest.mark.slow
async def test_a_consumer_rides_out_nats_server_restarts(tmp_path: Path, supervisor: Supervisor) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        settings = NatsSettings(url=server.url, prefix="restart")
        names = BusNames("restart")
        client = await connect(settings, "restart-test")
        js = client.jetstream()
        await declare_streams(js, names, settings)
        dlq = DeadLetterQueue(
            js,
            names,
            max_failures=MAX_FAILURES,
            meter=Telemetry(settings=TelemetrySettings(), service_name="t").meter("t"),
        )
        seen: list[bytes] = []

        async def handler(msg: Msg) -> None:
            seen.append(msg.data)

        consumer = PullConsumer(js, _spec(names), handler, name="test", deadletters=dlq)
        await consumer.start(supervisor)
        subject = f"{names.prefix}.evt.run.running"
        await publish_until_stored(js, subject, b"before", msg_id="before")
        await wait_until(lambda: seen == [b"before"], message="the first message")
        for n in range(2):
            await server.stop()
            await server.start()
            body = f"after-{n}".encode()
            await publish_until_stored(js, subject, body, msg_id=body.decode())
            await wait_until(lambda b=body: b in seen, timeout=30, message=f"the message after restart {n}")  # type: ignore[misc]
        await consumer.drain()
        await client.close()
        assert seen == [b"before", b"after-0", b"after-1"]
        assert supervisor.failure is None
    finally:
        await server.stop()


async def test_a_consumer_deleted_under_it_is_declared_again(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, supervisor: Supervisor
) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)

    consumer = await _start(js, names, handler, dlq, supervisor)
    subject = f"{names.prefix}.evt.run.queued"
    await _publish(js, subject, b"first")
    await wait_until(lambda: seen == [b"first"], message="the first message")
    # What a lost JetStream store looks like to a running consumer: its durable is gone.
    await js.delete_consumer(names.events_stream, DURABLE)
    await _publish(js, subject, b"second")
    await wait_until(lambda: consumer.subscriptions >= 2, timeout=15, message="the consumer to be declared again")
    await wait_until(lambda: b"second" in seen, timeout=15, message="the message published after the loss")
    await consumer.drain()


@pytest.mark.slow
async def test_an_ordered_consumer_like_a_log_follower_resumes_after_a_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        settings = NatsSettings(url=server.url, prefix="ordered")
        names = BusNames("ordered")
        client = await connect(settings, "ordered-test")
        js = client.jetstream()
        await declare_streams(js, names, settings)
        subject = names.run_log("run-1")
        await publish_until_stored(js, subject, b"0", msg_id="0")
        # As api's LogFollower subscribes: ordered, from the start; the heartbeat bounds how soon a consumer
        # lost with the server's memory is noticed and re-created from the last sequence seen.
        sub = await js.subscribe(
            subject, ordered_consumer=True, stream=names.logs_stream, idle_heartbeat=FOLLOWER_HEARTBEAT
        )
        assert (await sub.next_msg(timeout=5)).data == b"0"
        await server.stop()
        await server.start()
        for n in range(1, 4):
            await publish_until_stored(js, subject, str(n).encode(), msg_id=str(n))
        received = [(await sub.next_msg(timeout=30)).data for _ in range(3)]
        assert received == [b"1", b"2", b"3"]
        await sub.unsubscribe()
        await client.close()
    finally:
        await server.stop()


async def test_a_restarted_consumer_binds_again_and_consumes(
    js: JetStreamContext, names: BusNames, dlq: DeadLetterQueue, supervisor: Supervisor
) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)

    consumer = await _start(js, names, handler, dlq, supervisor)
    await consumer.drain()
    # What the supervisor does with a component whose task died: drain, then start again.
    await consumer.start(supervisor)
    await _publish(js, f"{names.prefix}.evt.run.launching", b"after-restart")
    await wait_until(lambda: seen == [b"after-restart"], message="the restarted consumer to take the message")
    assert consumer.subscriptions == 2
    await consumer.drain()
