"""Publishing to JetStream: every message carries a Nats-Msg-Id and the current trace context."""

from __future__ import annotations

from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import PubAck

from ame_platform import telemetry

MSG_ID = "Nats-Msg-Id"


def headers_for(msg_id: str) -> dict[str, str]:
    return dict(telemetry.inject({MSG_ID: msg_id}))


async def publish(js: JetStreamContext, subject: str, message: Message, *, msg_id: str, timeout: float = 5.0) -> PubAck:
    """Publish and wait for the stream's ack. A repeat of `msg_id` within the duplicate window is dropped by
    the server (the ack says `duplicate`), which is what makes retries and racing replicas safe."""
    return await js.publish(subject, message.SerializeToString(), timeout=timeout, headers=headers_for(msg_id))
