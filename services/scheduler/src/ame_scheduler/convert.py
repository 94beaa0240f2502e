"""The only module of the scheduler where generated contracts meet domain types."""

from __future__ import annotations

from datetime import datetime

from ame import bus_messages, codecs
from ame.bus_messages import DecodeError, ProjectScheduleSet, RetryRequest
from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, RunSpec, RunState
from ame_scheduler.repositories.schedules import DueSchedule

__all__ = ["DecodeError", "ProjectScheduleSet", "RetryRequest"]


def schedule_fired(due: DueSchedule, slot: datetime, *, fired_at: datetime) -> bytes:
    return bus_messages.encode_schedule_fired(
        due.id,
        due.organisation,
        due.cron,
        due.spec,
        slot,
        overlap=due.overlap,
        timezone=due.timezone,
        fired_at=fired_at,
    )


def parse_project_schedules(data: bytes) -> ProjectScheduleSet:
    return bus_messages.parse_project_schedules(data)


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


# Pipelines -----------------------------------------------------------------------------------------------------


def parse_pipeline_started(data: bytes) -> bus_messages.PipelineStartRequest:
    return bus_messages.parse_pipeline_started(data)


def parse_state_changed(data: bytes) -> codecs.StateEvent:
    return codecs.parse_state_changed(data)


def parse_cancel(data: bytes) -> tuple[str, int, str]:
    return bus_messages.parse_cancel(data)


def spec_to_bytes(spec: RunSpec) -> bytes:
    return codecs.run_spec_to_pb(spec).SerializeToString()


def spec_from_bytes(data: bytes) -> RunSpec:
    return codecs.run_spec_from_pb(run_pb2.RunSpec.FromString(data))


def step_requested(request: bus_messages.StepRequest) -> bytes:
    return bus_messages.encode_step_requested(request)


def cancel_requested(run_id: str, attempt: int, reason: str) -> bytes:
    return bus_messages.encode_cancel(run_id, attempt, reason)


def state_changed(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    return codecs.state_changed_pb(run_id, attempt, state, exit_code, reason).SerializeToString()


def log_end(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    end = codecs.log_end_to_pb(LogEnd(state=state, exit_code=exit_code, reason=reason))
    return log_pb2.LogChunk(run_id=run_id, attempt=attempt, end=end).SerializeToString()
