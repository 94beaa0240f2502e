"""Streams and durable pull consumers against a real nats-server, each test in its own namespace."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy
from opentelemetry import metrics

from ame.codecs import state_changed_pb
from ame.domain import RunState
from ame_platform.bus.consumer import ConsumerSpec, Handler, Poison, PullConsumer
from ame_platform.bus.deadletters import DeadLetterQueue
from ame_platform.bus.publisher import MSG_ID, headers_for
from ame_platform.bus.streams import declare_streams
from ame_platform.bus.subjects import BusNames
from ame_platform.lifecycle import Supervisor
from ame_platform.settings import NatsSettings
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="session")]

DURABLE = "test-work"


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def names(bus_prefix: str) -> BusNames:
    return BusNames(bus_prefix)


@pytest.fixture
def settings(nats_url: str, bus_prefix: str) -> NatsSettings:
    return NatsSettings(url=nats_url, prefix=bus_prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def js(nc: Client, names: BusNames, settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    jetstream = nc.jetstream()
    await declare_streams(jetstream, names, settings)
    yield jetstream
    for stream in (names.commands_stream, names.events_stream, names.logs_stream, names.deadletter_stream):
        await jetstream.delete_stream(stream)


@pytest.fixture
def deadletters(js: JetStreamContext, names: BusNames) -> DeadLetterQueue:
    return DeadLetterQueue(js, names, max_failures=3, meter=metrics.NoOpMeter("test"))


class RecordingSupervisor(Supervisor):
    """A supervisor that remembers the tasks it spawned, so a test can watch a consumer's fetch loop."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[asyncio.Task[None]] = []

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = super().spawn(name, coro)
        self.spawned.append(task)
        return task


@pytest_asyncio.fixture(loop_scope="session")
async def supervisor() -> AsyncIterator[RecordingSupervisor]:
    sup = RecordingSupervisor()
    yield sup
    await sup.cancel_all()
    assert sup.failure is None, f"a supervised task failed: {sup.failure!r}"


def _work(names: BusNames, **overrides: Any) -> ConsumerSpec:
    options: dict[str, Any] = {"concurrency": 4, "redeliver_delay": 0.05, **overrides}
    return ConsumerSpec(stream=names.commands_stream, durable=DURABLE, filter_subject=names.run_launch, **options)


async def _start(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handler: Handler,
    supervisor: Supervisor,
    deadletters: DeadLetterQueue | None = None,
) -> PullConsumer:
    names = BusNames(spec.filter_subject.split(".")[0])
    deadletters = deadletters or DeadLetterQueue(js, names, max_failures=3, meter=metrics.NoOpMeter("test"))
    consumer = PullConsumer(js, spec, handler, name="test", deadletters=deadletters)
    await consumer.start(supervisor)
    return consumer


async def _stream_messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def _publish_work(js: JetStreamContext, names: BusNames, body: bytes, msg_id: str) -> int:
    ack = await js.publish(names.run_launch, body, headers={MSG_ID: msg_id})
    return ack.seq


# Streams -------------------------------------------------------------------------------------------


async def test_declare_streams_is_idempotent_and_applies_a_changed_size_cap(
    js: JetStreamContext, names: BusNames, settings: NatsSettings
) -> None:
    await js.publish(names.run_launch, b"kept", headers={MSG_ID: "kept-1"})
    await declare_streams(js, names, settings)
    await declare_streams(js, names, settings)

    commands = await js.stream_info(names.commands_stream)
    events = await js.stream_info(names.events_stream)
    logs = await js.stream_info(names.logs_stream)
    assert commands.config.retention == RetentionPolicy.WORK_QUEUE
    assert commands.config.subjects == [names.commands_wildcard]
    assert events.config.retention == RetentionPolicy.LIMITS
    assert logs.config.max_bytes == settings.logs_max_bytes
    # Re-declaring neither recreated nor purged anything.
    assert commands.state.messages == 1

    smaller = settings.model_copy(update={"logs_max_bytes": 1 << 20, "logs_max_age": 3600.0})
    await declare_streams(js, names, smaller)
    logs = await js.stream_info(names.logs_stream)
    assert logs.config.max_bytes == 1 << 20
    assert logs.config.max_age == 3600.0
    assert await _stream_messages(js, names.commands_stream) == 1


async def test_the_same_msg_id_is_stored_once(js: JetStreamContext, names: BusNames) -> None:
    event = state_changed_pb("run-1", 1, RunState.RUNNING, None, "").SerializeToString()
    subject = names.run_state(RunState.RUNNING)
    first = await js.publish(subject, event, headers=headers_for("state:run-1:1:running"))
    again = await js.publish(subject, event, headers=headers_for("state:run-1:1:running"))
    other = await js.publish(subject, event, headers=headers_for("state:run-1:2:running"))
    assert not first.duplicate and again.duplicate and not other.duplicate
    assert again.seq == first.seq
    assert await _stream_messages(js, names.events_stream) == 2


# Pull consumers ------------------------------------------------------------------------------------


async def test_a_handled_message_is_acked_and_leaves_the_work_queue(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)

    consumer = await _start(js, _work(names), handler, supervisor)
    await _publish_work(js, names, b"job-1", "job-1")
    await wait_until(lambda: seen == [b"job-1"], message="the handler to run")
    await wait_until(lambda: _no_messages(js, names.commands_stream), message="the acked message to leave the queue")
    info = await js.consumer_info(names.commands_stream, DURABLE)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    await consumer.drain()
    assert seen == [b"job-1"]


async def _no_messages(js: JetStreamContext, stream: str) -> bool:
    return await _stream_messages(js, stream) == 0


async def test_poison_is_terminated_not_redelivered(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    calls: Counter[bytes] = Counter()

    async def handler(msg: Msg) -> None:
        calls[msg.data] += 1
        if msg.data == b"poison":
            raise Poison("cannot be processed")

    consumer = await _start(js, _work(names, redeliver_delay=0.01), handler, supervisor)
    await _publish_work(js, names, b"poison", "p-1")
    await wait_until(lambda: calls[b"poison"] == 1, message="the poison message to be handled")

    async def settled() -> bool:
        info = await js.consumer_info(names.commands_stream, DURABLE)
        return bool(info.num_ack_pending == 0 and info.num_pending == 0)

    await wait_until(settled, message="the poison message to be settled")
    # Later work flows past it, and it never comes back.
    await _publish_work(js, names, b"healthy", "h-1")
    await wait_until(lambda: calls[b"healthy"] == 1, message="the next message to be handled")
    await wait_until(lambda: _no_messages(js, names.commands_stream), message="the work queue to empty")
    info = await js.consumer_info(names.commands_stream, DURABLE)
    assert info.num_redelivered == 0
    await consumer.drain()
    assert calls == {b"poison": 1, b"healthy": 1}


async def test_a_failing_handler_gets_the_message_again_and_the_retry_succeeds(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    deliveries: list[int] = []

    async def handler(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("database briefly unavailable")

    consumer = await _start(js, _work(names), handler, supervisor)
    await _publish_work(js, names, b"flaky", "f-1")
    await wait_until(lambda: len(deliveries) == 2, message="the redelivery")
    await wait_until(lambda: _no_messages(js, names.commands_stream), message="the retry to be acked")
    await consumer.drain()
    assert deliveries == [1, 2]


async def test_no_more_handlers_run_at_once_than_the_concurrency_bound(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    bound, total = 3, 12
    gate = asyncio.Event()
    current = 0
    peak = 0
    done = 0

    async def handler(msg: Msg) -> None:
        nonlocal current, peak, done
        current += 1
        peak = max(peak, current)
        try:
            await gate.wait()
        finally:
            current -= 1
        done += 1

    consumer = await _start(js, _work(names, concurrency=bound), handler, supervisor)
    for i in range(total):
        await _publish_work(js, names, f"job-{i}".encode(), f"c-{i}")
    await wait_until(lambda: current == bound, message=f"{bound} handlers to be running")
    # With every slot busy, the consumer must not have taken more off the server than it can run.
    info = await js.consumer_info(names.commands_stream, DURABLE)
    assert info.num_ack_pending == bound
    assert info.num_pending == total - bound
    gate.set()
    await wait_until(lambda: done == total, message="every message to be handled")
    await wait_until(lambda: _no_messages(js, names.commands_stream), message="the work queue to empty")
    await consumer.drain()
    assert peak == bound


async def test_drain_waits_for_handlers_in_flight_and_their_acks(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    finished: list[bytes] = []

    async def handler(msg: Msg) -> None:
        started.set()
        await gate.wait()
        finished.append(msg.data)

    consumer = await _start(js, _work(names), handler, supervisor)
    (fetch_loop,) = supervisor.spawned
    await _publish_work(js, names, b"slow", "s-1")
    await asyncio.wait_for(started.wait(), timeout=10)

    drain = asyncio.create_task(consumer.drain())
    await wait_until(fetch_loop.done, message="the fetch loop to stop taking work")
    # Intake has stopped; the drain must still be waiting on the handler it holds.
    done, _ = await asyncio.wait({drain}, timeout=0.2)
    assert not done and finished == []
    gate.set()
    await asyncio.wait_for(drain, timeout=10)
    assert finished == [b"slow"]
    # The handler acked before drain returned: the server settles it and nothing is redelivered.
    await wait_until(lambda: _no_messages(js, names.commands_stream), message="the ack to reach the server")
    info = await js.consumer_info(names.commands_stream, DURABLE)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_drained_consumer_takes_no_new_work(
    js: JetStreamContext, names: BusNames, supervisor: RecordingSupervisor
) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)

    consumer = await _start(js, _work(names), handler, supervisor)
    await consumer.drain()
    await _publish_work(js, names, b"after-drain", "a-1")
    info = await js.consumer_info(names.commands_stream, DURABLE)
    assert info.num_pending == 1 and info.num_ack_pending == 0
    # A second replica sharing the durable picks it up: the work was left for others, not lost.
    replica = await _start(js, _work(names), handler, supervisor)
    await wait_until(lambda: seen == [b"after-drain"], message="the other replica to take the message")
    await replica.drain()
