"""Durable pull consumers shared by all replicas of a service.

JetStream delivers at least once, so handlers must be idempotent. A handler returns normally to ack, raises
`Poison` to terminate a message that can never be processed (it is logged, not redelivered forever), raises
`Redeliver` to hand a message back without complaint (a stopping replica), and raises anything else to have
it redelivered with a growing delay. Deliveries are not capped: a message that fails because the database is
down for a minute must still be applied once it is back, or a run would stay non-terminal forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError, NotFoundError
from opentelemetry import trace

from ame_platform import telemetry
from ame_platform.lifecycle import Supervisor

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


class Poison(Exception):
    """The message can never be processed (undecodable, or refers to nothing); it is terminated."""


class Redeliver(Exception):
    """Hand the message back now, for this or another replica; not an error."""


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    concurrency: int = 16
    ack_wait: float = 30.0
    # -1: unlimited. Failures back off from redeliver_delay up to max_redeliver_delay.
    max_deliver: int = -1
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    redeliver_delay: float = 0.5
    max_redeliver_delay: float = 30.0


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    config = ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        filter_subject=spec.filter_subject,
        deliver_policy=spec.deliver_policy,
        max_ack_pending=max(spec.concurrency * 4, 64),
    )
    try:
        await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, config)
    else:
        # Creating with an identical config is accepted by the server; a changed config is applied where
        # JetStream allows it (ack wait, max deliver, ...).
        await js.add_consumer(spec.stream, config)


class PullConsumer:
    """Fetches from one durable consumer and runs the handler with bounded concurrency."""

    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        name: str,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.name = name
        self._tracer = tracer or trace.NoOpTracer()
        self._js = js
        self._spec = spec
        self._handler = handler
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self, supervisor: Supervisor) -> None:
        await ensure_consumer(self._js, self._spec)
        self._sub = await self._js.pull_subscribe_bind(durable=self._spec.durable, stream=self._spec.stream)
        self._loop_task = supervisor.spawn(f"consume:{self._spec.durable}", self._fetch_loop(self._sub))

    async def drain(self) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        if self._sub is not None:
            # Unsubscribe rather than leave it to the connection's drain: a pull subscription's inbox can
            # hold status messages of expired fetches that nobody reads, and draining would wait on them.
            await self._sub.unsubscribe()
            self._sub = None

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            free = 1
            # Take as many slots as are free right now, so one fetch can return a batch.
            while free < self._spec.concurrency and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                # A short fetch timeout bounds how long a drain waits for this loop to notice the stop flag.
                msgs = await sub.fetch(batch=free, timeout=0.5)
            except (TimeoutError, NatsTimeoutError, FetchTimeoutError):
                msgs = []
            for _ in range(free - len(msgs)):
                self._slots.release()
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg), name=f"handle:{self._spec.durable}")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            with (
                telemetry.extracted(msg.headers),
                self._tracer.start_as_current_span(
                    f"{self._spec.durable} process",
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"messaging.destination.name": msg.subject},
                ),
            ):
                await self._handler(msg)
        except Poison as exc:
            log.error("%s: dropping message on %s: %s", self._spec.durable, msg.subject, exc)
            await msg.term()
        except Redeliver:
            await msg.nak()
        except Exception:
            deliveries = msg.metadata.num_delivered or 1
            delay = min(self._spec.redeliver_delay * 2 ** (deliveries - 1), self._spec.max_redeliver_delay)
            log.exception(
                "%s: handler failed on %s (delivery %d); redelivering in %.1fs",
                self._spec.durable,
                msg.subject,
                deliveries,
                delay,
            )
            await msg.nak(delay=delay)
        else:
            await msg.ack()
        finally:
            self._slots.release()
