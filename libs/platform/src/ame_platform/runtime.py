"""The connections a service process holds, opened once in its lifespan and closed on the way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from ame_platform.bus.connection import connect
from ame_platform.bus.consumer import ConsumerSpec, DeadLetterHook, Handler, PullConsumer
from ame_platform.bus.deadletters import DeadLetterQueue
from ame_platform.bus.streams import declare_streams
from ame_platform.bus.subjects import BusNames
from ame_platform.db.pool import create_pool
from ame_platform.settings import NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.telemetry import Telemetry


@dataclass(frozen=True)
class Runtime:
    nc: Client
    js: JetStreamContext
    pool: asyncpg.Pool
    names: BusNames
    telemetry: Telemetry
    deadletters: DeadLetterQueue

    def events_consumer(
        self,
        durable: str,
        subject: str,
        handler: Handler,
        *,
        name: str,
        concurrency: int,
        tracer: str,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> PullConsumer:
        """A durable consumer of the events stream (shared by a service's replicas), dead-lettering into this
        runtime's queue and traced under `tracer`: how every service consumes the events it acts on."""
        return PullConsumer(
            self.js,
            ConsumerSpec(
                stream=self.names.events_stream, durable=durable, filter_subject=subject, concurrency=concurrency
            ),
            handler,
            name=name,
            deadletters=self.deadletters,
            on_dead_letter=on_dead_letter,
            tracer=self.telemetry.tracer(tracer),
        )


@asynccontextmanager
async def open_runtime(
    *,
    name: str,
    nats: NatsSettings,
    postgres: PostgresSettings,
    telemetry: TelemetrySettings,
) -> AsyncIterator[Runtime]:
    """Connect to NATS (declaring AME's streams) and PostgreSQL; on exit drain NATS and close the pool."""
    async with AsyncExitStack() as stack:
        tel = Telemetry(telemetry, name)
        stack.callback(tel.shutdown)
        nc = await connect(nats, name)
        stack.push_async_callback(_drain_nats, nc)
        js = nc.jetstream()
        names = BusNames(nats.prefix)
        await declare_streams(js, names, nats)
        pool = await create_pool(postgres)
        stack.push_async_callback(pool.close)
        deadletters = DeadLetterQueue(js, names, max_failures=nats.max_failures, meter=tel.meter("ame_platform.bus"))
        yield Runtime(nc=nc, js=js, pool=pool, names=names, telemetry=tel, deadletters=deadletters)


async def _drain_nats(nc: Client) -> None:
    if not nc.is_closed:
        await nc.drain()
