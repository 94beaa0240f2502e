"""Declaring AME's streams at start, idempotently: create when missing, update when the config changed."""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ame_platform.bus.subjects import BusNames
from ame_platform.faults import is_transient
from ame_platform.settings import NatsSettings

log = logging.getLogger(__name__)


def stream_configs(names: BusNames, settings: NatsSettings) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=names.commands_stream,
            subjects=[names.commands_wildcard],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=settings.duplicate_window,
            num_replicas=settings.replicas,
        ),
        StreamConfig(
            name=names.events_stream,
            subjects=[names.events_wildcard],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.events_max_age,
            duplicate_window=min(settings.duplicate_window, settings.events_max_age),
            num_replicas=settings.replicas,
        ),
        StreamConfig(
            name=names.logs_stream,
            subjects=[names.logs_wildcard],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.logs_max_age,
            max_bytes=settings.logs_max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=min(settings.duplicate_window, settings.logs_max_age),
            num_replicas=settings.replicas,
        ),
        StreamConfig(
            name=names.deadletter_stream,
            subjects=[names.deadletter_wildcard],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.deadletter_max_age,
            duplicate_window=min(settings.duplicate_window, settings.deadletter_max_age),
            num_replicas=settings.replicas,
        ),
    ]


async def declare_streams(
    js: JetStreamContext, names: BusNames, settings: NatsSettings, *, within: float | None = None
) -> None:
    """Declare (or update) AME's streams, retrying what passes for up to `within` seconds (default: the
    connect timeout, and at least 30 s). A cluster that has just formed, or is electing a meta leader,
    answers JetStream API requests with timeouts or 503s for a few seconds; a service starting then must
    wait, not exit."""
    deadline = time.monotonic() + (max(settings.connect_timeout, 30.0) if within is None else within)
    delay = 0.1
    while True:
        try:
            for config in stream_configs(names, settings):
                await _declare(js, config)
            return
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            log.warning("declaring streams: JetStream not ready (%r); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _declare(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
    else:
        # update_stream is a no-op when nothing changed, and applies a new size or age cap when it did.
        await js.update_stream(config)
