"""Durable pull consumers shared by all replicas of a service.

JetStream delivers at least once, so handlers must be idempotent. A handler returns normally to ack, raises
`Redeliver` to hand a message back without complaint (a stopping replica), and raises anything else to have
it retried. What happens then depends on the class of the error (`ame_platform.faults.classify`):

* transient (NATS or PostgreSQL away, a serialisation failure, ...): redelivered with a growing delay for
  as long as it takes, never counted. A run event that fails because the database is down for a minute must
  still be applied once it is back, or a run would stay non-terminal forever.
* permanent (a data error, an unexpected exception): counted per message; after `max_failures` the message
  is dead-lettered (`DeadLetterQueue`) with the reason, and terminated in its stream so the messages behind
  it flow. `Poison` (undecodable, refers to nothing) is dead-lettered on its first failure.

The fetch loop itself rides out a broker restart or a JetStream leader change: a failed fetch backs off (up
to a cap), re-declares the durable consumer and binds a new subscription, then goes on. Acks that fail
because the connection is away are logged; JetStream redelivers after the ack wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
from ame_platform.bus.deadletters import DeadLetterQueue
from ame_platform.faults import Fault, Poison, classify
from ame_platform.lifecycle import Supervisor

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
# Called once a message is dead-lettered, before it is terminated, with the reason: a consumer whose
# message must still have an effect (a run's final state) applies what it safely can here.
DeadLetterHook = Callable[[Msg, str], Awaitable[None]]

__all__ = ["ConsumerSpec", "DeadLetterHook", "Handler", "Poison", "PullConsumer", "Redeliver", "ensure_consumer"]

# Permanent-failure counts are kept per process for this many messages at most (oldest forgotten first):
# a message that another replica settled never reports back here.
_FAILURE_MEMORY = 10_000


class Redeliver(Exception):
    """Hand the message back now, for this or another replica; not an error."""


async def keep_in_hand(msg: Msg) -> None:
    """Tell JetStream a handler still works on `msg` (its ack wait starts over), so it is not handed to another
    replica meanwhile. With the connection away this cannot be said; the message may then be redelivered, which
    every handler tolerates, so that is not an error here."""
    with contextlib.suppress(Exception):
        await msg.in_progress()


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
    # A failed fetch (broker away) is retried after this delay, doubling up to the cap.
    reconnect_delay: float = 0.1
    max_reconnect_delay: float = 5.0


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
        deadletters: DeadLetterQueue,
        on_dead_letter: DeadLetterHook | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.name = name
        self._tracer = tracer or trace.NoOpTracer()
        self._js = js
        self._spec = spec
        self._handler = handler
        self._deadletters = deadletters
        self._on_dead_letter = on_dead_letter
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._failures: collections.OrderedDict[int, int] = collections.OrderedDict()
        # How often the subscription was (re)bound: 1 after start, more after riding out broker faults.
        self.subscriptions = 0

    async def start(self, supervisor: Supervisor) -> None:
        restarted = self.subscriptions > 0
        self._stopping.clear()
        if not restarted:
            # The first bind must succeed: a consumer that cannot be declared at start is a configuration
            # fault. After a restart the fetch loop binds, riding out a broker that is still away.
            await self._subscribe()
        self._loop_task = supervisor.spawn(f"consume:{self._spec.durable}", self._fetch_loop())

    async def drain(self) -> None:
        self._stopping.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        await self._unsubscribe()

    async def _subscribe(self) -> None:
        await ensure_consumer(self._js, self._spec)
        self._sub = await self._js.pull_subscribe_bind(durable=self._spec.durable, stream=self._spec.stream)
        self.subscriptions += 1

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        # Unsubscribe rather than leave it to the connection's drain: a pull subscription's inbox can hold
        # status messages of expired fetches that nobody reads, and draining would wait on them.
        try:
            await sub.unsubscribe()
        except Exception as exc:
            log.debug("%s: unsubscribing failed: %s", self._spec.durable, exc)

    async def _take_slots(self) -> int:
        await self._slots.acquire()
        free = 1
        # Take as many slots as are free right now, so one fetch can return a batch.
        while free < self._spec.concurrency and not self._slots.locked():
            await self._slots.acquire()
            free += 1
        return free

    async def _fetch_loop(self) -> None:
        delay = self._spec.reconnect_delay
        failures = 0
        while not self._stopping.is_set():
            free = await self._take_slots()
            msgs: list[Msg] = []
            try:
                if self._sub is None:
                    await self._subscribe()
                    log.info("%s: consuming again after %d failed attempt(s)", self._spec.durable, failures)
                assert self._sub is not None
                # A short fetch timeout bounds how long a drain waits for this loop to notice the stop flag.
                msgs = await self._sub.fetch(batch=free, timeout=0.5)
            except (TimeoutError, NatsTimeoutError, FetchTimeoutError):
                # No messages; also what a fetch says while the client is reconnecting.
                pass
            except Exception as exc:
                # JetStream away while the connection is up (503), the connection closed or reconnecting,
                # the consumer deleted with a lost store, a leader change: back off, then re-declare the
                # consumer and bind a fresh subscription. Nothing here ends the process.
                failures += 1
                level = logging.WARNING if failures <= 3 or failures % 20 == 0 else logging.DEBUG
                log.log(
                    level,
                    "%s: fetching failed (%s: %s); retrying in %.1fs",
                    self._spec.durable,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._unsubscribe()
                self._release(free)
                await self._pause(delay)
                delay = min(delay * 2, self._spec.max_reconnect_delay)
                continue
            else:
                failures = 0
                delay = self._spec.reconnect_delay
            self._release(free - len(msgs))
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg), name=f"handle:{self._spec.durable}")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

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
        except Redeliver:
            await self._settle(msg, "nak", msg.nak())
        except Exception as exc:
            await self._on_failure(msg, exc)
        else:
            self._forget(msg)
            await self._settle(msg, "ack", msg.ack())
        finally:
            self._slots.release()

    async def _on_failure(self, msg: Msg, exc: Exception) -> None:
        deliveries = msg.metadata.num_delivered or 1
        delay = min(self._spec.redeliver_delay * 2 ** min(deliveries - 1, 30), self._spec.max_redeliver_delay)
        if classify(exc) is Fault.TRANSIENT:
            log.warning(
                "%s: transient fault on %s (delivery %d): %s: %s; retrying in %.1fs",
                self._spec.durable,
                msg.subject,
                deliveries,
                type(exc).__name__,
                exc,
                delay,
            )
            await self._settle(msg, "nak", msg.nak(delay=delay))
            return
        count = self._count_failure(msg, poison=isinstance(exc, Poison))
        # Paced by this process's own count, not by deliveries: replicas share the message, and transient
        # redeliveries before it must not stretch the few tries a permanent fault gets.
        delay = min(self._spec.redeliver_delay * 2 ** min(count - 1, 30), self._spec.max_redeliver_delay)
        if count < self._deadletters.max_failures:
            log.error(
                "%s: handler failed on %s (delivery %d, failure %d of %d); redelivering in %.1fs",
                self._spec.durable,
                msg.subject,
                deliveries,
                count,
                self._deadletters.max_failures,
                delay,
                exc_info=exc,
            )
            await self._settle(msg, "nak", msg.nak(delay=delay))
            return
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Poison) else f"poison: {exc}"
        try:
            await self._deadletters.put(msg, consumer=self._spec.durable, reason=reason, failures=count)
        except Exception as put_exc:
            # The dead-letter stream is out of reach too (NATS away): keep the message and try again later.
            log.warning("%s: could not dead-letter %s: %s; retrying", self._spec.durable, msg.subject, put_exc)
            await self._settle(msg, "nak", msg.nak(delay=delay))
            return
        if self._on_dead_letter is not None:
            try:
                await self._on_dead_letter(msg, reason)
            except Exception as hook_exc:
                if classify(hook_exc) is Fault.TRANSIENT:
                    # Keep the message (and its count): the next failure dead-letters it again, which the
                    # dead letter's msg id makes a no-op, and the hook gets another chance.
                    log.warning("%s: dead-letter hook: %s; retrying", self._spec.durable, hook_exc)
                    await self._settle(msg, "nak", msg.nak(delay=delay))
                    return
                log.exception("%s: the dead-letter hook failed on %s", self._spec.durable, msg.subject)
        self._forget(msg)
        await self._settle(msg, "term", msg.term())

    def _count_failure(self, msg: Msg, *, poison: bool) -> int:
        key = msg.metadata.sequence.stream
        count = self._deadletters.max_failures if poison else self._failures.pop(key, 0) + 1
        self._failures[key] = count
        while len(self._failures) > _FAILURE_MEMORY:
            self._failures.popitem(last=False)
        return count

    def _forget(self, msg: Msg) -> None:
        if self._failures:
            self._failures.pop(msg.metadata.sequence.stream, None)

    async def _settle(self, msg: Msg, what: str, action: Awaitable[None]) -> None:
        # An ack lost to a connection that is away is not worth a task's life: JetStream redelivers the
        # message after the ack wait, and handlers are idempotent.
        try:
            await action
        except Exception as exc:
            log.warning("%s: could not %s a message on %s: %s", self._spec.durable, what, msg.subject, exc)
