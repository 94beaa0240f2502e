"""Connecting to NATS."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client

from ame_platform.settings import NatsSettings

log = logging.getLogger(__name__)

# Idle heartbeat of ordered consumers (live log followers). nats-py re-creates an ordered consumer from the
# last sequence it saw once two heartbeats are missed, which is how a follower resumes after the server
# restarted and forgot its (in-memory) consumer; the client's default of 5 s would leave it silent for 10 s.
FOLLOWER_HEARTBEAT = 1.0


async def connect(settings: NatsSettings, name: str) -> Client:
    """Connect with reconnects on; the first connect must succeed within the configured timeout."""

    async def _error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def _disconnected() -> None:
        # Also called on every clean close; reconnect failures are reported through the error callback.
        log.info("nats: disconnected")

    async def _reconnected() -> None:
        log.info("nats: reconnected")

    return await nats.connect(
        servers=[s.strip() for s in settings.url.split(",") if s.strip()],
        name=name,
        connect_timeout=max(1, int(settings.connect_timeout)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        # Bounds the drain on shutdown; what is not flushed by then is redelivered (at-least-once).
        drain_timeout=5,
        error_cb=_error,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
    )
