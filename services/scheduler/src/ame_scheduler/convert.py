"""The only module of the scheduler where generated contracts meet domain types."""

from __future__ import annotations

from datetime import datetime

from ame import bus_messages, codecs
from ame.bus_messages import DecodeError, RetryRequest
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogEnd, RunSpec, RunState

__all__ = ["DecodeError", "RetryRequest"]


def schedule_fired(schedule_id: str, organisation: str, cron: str, spec: RunSpec, slot: datetime) -> bytes:
    return bus_messages.encode_schedule_fired(schedule_id, organisation, cron, spec, slot)


def parse_retry_requested(data: bytes) -> RetryRequest:
    return bus_messages.parse_retry_requested(data)


def cancelled(run_id: str, attempt: int, reason: str) -> tuple[bytes, bytes]:
    """The state event and the end of output that end an attempt cancelled before it was launched."""
    event = codecs.state_changed_pb(run_id, attempt, RunState.CANCELLED, None, reason).SerializeToString()
    end = log_pb2.LogChunk(
        run_id=run_id, attempt=attempt, end=codecs.log_end_to_pb(LogEnd(state=RunState.CANCELLED, reason=reason))
    ).SerializeToString()
    return event, end


def is_cancel(data: bytes) -> bool:
    """Whether a message on a run's cancel subject is a readable cancel request."""
    try:
        run_id, _, _ = bus_messages.parse_cancel(data)
    except DecodeError:
        return False
    return bool(run_id)
