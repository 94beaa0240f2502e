"""Declaring AME's streams at start, idempotently: create when missing, update when the config changed."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from ame_platform.bus.subjects import BusNames
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


async def declare_streams(js: JetStreamContext, names: BusNames, settings: NatsSettings) -> None:
    for config in stream_configs(names, settings):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", config.name)
        else:
            # update_stream is a no-op when nothing changed, and applies a new size or age cap when it did.
            await js.update_stream(config)
