"""The dead-letter stream: messages a consumer gave up on, kept with their reason until replayed or aged out.

A dead letter is the original message, payload untouched, published to `<prefix>.dlq.<durable>` on the
DEADLETTER stream. Its headers are the original ones plus `Ame-Dlq-*` headers saying where it came from
(subject, stream and sequence, consumer, deliveries) and why it was given up on. Header values we add are
percent-encoded, so any reason text (line breaks, NUL, non-ASCII) survives a NATS header intact.

Replaying publishes the payload and original headers to the original subject again, under a new
`Nats-Msg-Id` (the original one may still be in the source stream's duplicate window, which would drop it),
and then deletes the dead letter.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import metrics

from ame.domain.limits import MAX_REASON_CHARS
from ame_platform import telemetry
from ame_platform.bus.publisher import MSG_ID
from ame_platform.bus.subjects import BusNames
from ame_platform.faults import clean_text

log = logging.getLogger(__name__)

_PREFIX = "Ame-Dlq-"
H_SUBJECT = f"{_PREFIX}Subject"
H_STREAM = f"{_PREFIX}Stream"
H_STREAM_SEQ = f"{_PREFIX}Stream-Seq"
H_CONSUMER = f"{_PREFIX}Consumer"
H_DELIVERIES = f"{_PREFIX}Deliveries"
H_FAILURES = f"{_PREFIX}Failures"
H_REASON = f"{_PREFIX}Reason"
H_AT = f"{_PREFIX}At"
H_MSG_ID = f"{_PREFIX}Msg-Id"
H_PAYLOAD_DROPPED = f"{_PREFIX}Payload-Dropped"

# A reason is for people: the first few kilobytes of an error say all there is to say.
REASON_LIMIT = MAX_REASON_CHARS


class DeadLetterNotFound(LookupError):
    """No dead letter with that id (never existed, replayed already, or aged out)."""


class NotReplayable(ValueError):
    """The dead letter's payload was too large to keep, so there is nothing to replay."""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    subject: str
    stream: str
    stream_seq: int
    consumer: str
    deliveries: int
    failures: int
    reason: str
    at: datetime | None
    payload: bytes
    headers: dict[str, str]
    original_msg_id: str = ""
    payload_dropped: int = 0

    @property
    def replayable(self) -> bool:
        return self.payload_dropped == 0


def _enc(value: str) -> str:
    return quote(value, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


class DeadLetterQueue:
    """Puts messages on the DEADLETTER stream, lists them, and replays them to where they came from."""

    def __init__(self, js: JetStreamContext, names: BusNames, *, max_failures: int, meter: metrics.Meter) -> None:
        self._js = js
        self._names = names
        self.max_failures = max_failures
        self._counter = meter.create_counter(
            "ame.bus.deadletters", unit="{message}", description="Messages a consumer gave up on and dead-lettered."
        )

    @property
    def stream(self) -> str:
        return self._names.deadletter_stream

    async def put(self, msg: Msg, *, consumer: str, reason: str, failures: int, timeout: float = 5.0) -> None:
        """Store `msg` as a dead letter of `consumer`; raises if it could not be stored (the caller retries)."""
        meta = msg.metadata
        original = dict(msg.headers or {})
        headers = {k: v for k, v in original.items() if not k.startswith(_PREFIX) and k != MSG_ID}
        headers.update(
            {
                H_SUBJECT: _enc(msg.subject),
                H_STREAM: _enc(meta.stream or ""),
                H_STREAM_SEQ: str(meta.sequence.stream),
                H_CONSUMER: _enc(consumer),
                H_DELIVERIES: str(meta.num_delivered or 1),
                H_FAILURES: str(failures),
                H_REASON: _enc(clean_text(reason, REASON_LIMIT)),
                H_AT: datetime.now(UTC).isoformat(),
                # One dead letter per stored message and consumer, however often this is retried.
                MSG_ID: f"dlq:{consumer}:{meta.stream}:{meta.sequence.stream}",
            }
        )
        if MSG_ID in original:
            headers[H_MSG_ID] = _enc(original[MSG_ID])
        subject = self._names.deadletter(consumer)
        try:
            await self._js.publish(subject, msg.data, headers=headers, timeout=timeout)
        except MaxPayloadError:
            # The added headers pushed it over the server's limit: keep the record, without the payload.
            headers[H_PAYLOAD_DROPPED] = str(len(msg.data))
            await self._js.publish(subject, b"", headers=headers, timeout=timeout)
        self._counter.add(1, {"consumer": consumer})
        log.error(
            "%s: dead-lettered message %s on %s after %d failure(s): %s",
            consumer,
            meta.sequence.stream,
            msg.subject,
            failures,
            clean_text(reason, 500, single_line=True),
        )

    async def list(self, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """Dead letters with an id above `after`, oldest first, at most `limit`."""
        info = await self._js.stream_info(self.stream)
        letters: list[DeadLetter] = []
        seq = max(after + 1, info.state.first_seq or 1)
        last = info.state.last_seq or 0
        while len(letters) < limit and seq <= last:
            try:
                raw = await self._js.get_msg(self.stream, seq=seq, subject=self._names.deadletter_wildcard, next=True)
            except NotFoundError:
                break
            if raw.seq is None:
                break
            letters.append(_from_raw(raw.seq, raw.data or b"", raw.headers or {}))
            seq = raw.seq + 1
        return letters

    async def get(self, letter_id: int) -> DeadLetter:
        try:
            raw = await self._js.get_msg(self.stream, seq=letter_id)
        except NotFoundError:
            raise DeadLetterNotFound(f"dead letter {letter_id} not found") from None
        return _from_raw(letter_id, raw.data or b"", raw.headers or {})

    async def replay(self, letter_id: int) -> DeadLetter:
        """Publish the original message to its original subject again, then delete the dead letter."""
        letter = await self.get(letter_id)
        if not letter.replayable:
            raise NotReplayable(
                f"dead letter {letter_id} lost its {letter.payload_dropped}-byte payload (over the size limit)"
            )
        headers = dict(telemetry.inject({}))
        headers.update(letter.headers)
        original_id = letter.original_msg_id
        headers[MSG_ID] = f"replay:{letter_id}:{original_id}" if original_id else f"replay:{letter_id}"
        await self._js.publish(letter.subject, letter.payload, headers=headers)
        # NotFound: replayed concurrently; the msg id above kept the second publish from duplicating it.
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(self.stream, letter_id)
        log.info("replayed dead letter %d to %s", letter_id, letter.subject)
        return letter


def _from_raw(letter_id: int, payload: bytes, raw_headers: dict[str, str]) -> DeadLetter:
    def text(name: str) -> str:
        return unquote(raw_headers.get(name, ""))

    def number(name: str) -> int:
        try:
            return int(raw_headers.get(name, "0"))
        except ValueError:
            return 0

    try:
        at: datetime | None = datetime.fromisoformat(raw_headers[H_AT])
    except (KeyError, ValueError):
        at = None
    original = {k: v for k, v in raw_headers.items() if not k.startswith(_PREFIX) and k != MSG_ID}
    return DeadLetter(
        id=letter_id,
        subject=text(H_SUBJECT),
        stream=text(H_STREAM),
        stream_seq=number(H_STREAM_SEQ),
        consumer=text(H_CONSUMER),
        deliveries=number(H_DELIVERIES),
        failures=number(H_FAILURES),
        reason=text(H_REASON),
        at=at,
        payload=payload,
        headers=original,
        original_msg_id=text(H_MSG_ID),
        payload_dropped=number(H_PAYLOAD_DROPPED),
    )
