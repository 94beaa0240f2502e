"""Publishing to JetStream: every message carries a Nats-Msg-Id and the current trace context."""

from __future__ import annotations

import asyncio
import logging

from nats.errors import MaxPayloadError
from nats.js import JetStreamContext

from ame_platform import telemetry

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"


def headers_for(msg_id: str) -> dict[str, str]:
    return dict(telemetry.inject({MSG_ID: msg_id}))


async def publish_until_stored(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    attempts: int | None = None,
    timeout: float = 5.0,
) -> None:
    """Publish, retrying with backoff while NATS is unreachable (the msg id makes retries safe).

    `attempts=None` retries until it succeeds or the caller is cancelled; otherwise the last error is raised.
    A payload over the server's limit is never retried: it cannot succeed.
    """
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            await js.publish(subject, payload, headers=headers_for(msg_id), timeout=timeout)
            return
        except MaxPayloadError:
            raise
        except Exception:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("publishing %s failed (attempt %d); retrying", msg_id, attempt, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
