"""Runs: the launch, cancel, retry and state messages the api sends and reads, runs and tasks as the API shows
them, and the gRPC run requests (validated with the same limits as the REST schemas, ame.domain.limits)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import TypeAdapter

from ame import bus_messages, codecs
from ame.codecs import DecodeError, StateEvent
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import Run, RunAttempt, RunSpec, RunState, TriggerKind
from ame.domain.limits import MAX_PAGE_SIZE, IdempotencyKey, PageToken, Reason, RunIdPrefix, TaskPageToken
from ame.domain.tasks import TaskSummary
from ame_api.convert.fields import NAME_FILTER, RUN_ID, checked


def utcnow() -> datetime:
    return datetime.now(UTC)


def launch_command(
    run_id: str,
    attempt: int,
    organisation: str,
    spec: RunSpec,
    source: tuple[str, str] | None = None,
    data_set_output: bus_messages.DataSetOutput | None = None,
) -> bytes:
    """`source`: the (manifest key, blob prefix) of the run's project version in the object store;
    `data_set_output`: where a producing run stores its data set version."""
    where = bus_messages.ProjectSource(*source) if source is not None else None
    return bus_messages.encode_launch(run_id, attempt, organisation, spec, where, data_set_output=data_set_output)


def with_timeout(command: bytes, timeout_seconds: float | None) -> bytes:
    """A launch command whose spec gets `timeout_seconds` if it sets none (the admission step's default)."""
    if not timeout_seconds:
        return command
    pb = run_pb2.LaunchRun()
    pb.ParseFromString(command)
    if pb.spec.timeout_seconds:
        return command
    pb.spec.timeout_seconds = timeout_seconds
    return pb.SerializeToString()


def cancel_requested(run_id: str, attempt: int, reason: str) -> bytes:
    return bus_messages.encode_cancel(run_id, attempt, reason)


def retry_requested(run_id: str, attempt: int, previous_state: RunState, first_launch: bytes) -> bytes:
    """The scheduler's cue for attempt `attempt`, carrying that attempt's launch command (made from the first's)."""
    return bus_messages.encode_retry_requested(
        run_id, attempt, previous_state, bus_messages.relaunch(first_launch, attempt)
    )


def state_changed(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    return codecs.state_changed_pb(run_id, attempt, state, exit_code, reason).SerializeToString()


def parse_state_changed(data: bytes) -> StateEvent:
    return codecs.parse_state_changed(data)


def run_to_pb(run: Run) -> run_pb2.Run:
    pb = run_pb2.Run(
        id=run.id,
        organisation=run.organisation,
        spec=codecs.run_spec_to_pb(run.spec),
        state=codecs.state_to_pb(run.state),
        attempt=run.attempt,
        reason=run.reason,
        trigger=codecs.trigger_to_pb(run.trigger),
        parent_run_id=run.parent_run_id,
        started_by=run.started_by,
        created_at=codecs.timestamp(run.created_at),
        updated_at=codecs.timestamp(run.updated_at),
    )
    if run.exit_code is not None:
        pb.exit_code = run.exit_code
    if run.started_at is not None:
        pb.started_at.CopyFrom(codecs.timestamp(run.started_at))
    if run.finished_at is not None:
        pb.finished_at.CopyFrom(codecs.timestamp(run.finished_at))
    pb.attempts.extend(attempt_to_pb(a) for a in run.attempts)
    return pb


def attempt_to_pb(attempt: RunAttempt) -> run_pb2.RunAttempt:
    pb = run_pb2.RunAttempt(
        attempt=attempt.attempt,
        state=codecs.state_to_pb(attempt.state),
        reason=attempt.reason,
        launcher_id=attempt.launcher_id,
        created_at=codecs.timestamp(attempt.created_at),
    )
    if attempt.exit_code is not None:
        pb.exit_code = attempt.exit_code
    if attempt.started_at is not None:
        pb.started_at.CopyFrom(codecs.timestamp(attempt.started_at))
    if attempt.finished_at is not None:
        pb.finished_at.CopyFrom(codecs.timestamp(attempt.finished_at))
    return pb


# gRPC requests ---------------------------------------------------------------------------------------------

# Triggers a client may claim for itself; schedule and pipeline runs are created by AME only.
_CLIENT_TRIGGERS = {TriggerKind.API, TriggerKind.CLI}
_KNOWN_TRIGGERS = frozenset(run_pb2.TriggerKind.values())

_REASON: TypeAdapter[str] = TypeAdapter(Reason)
_PAGE_TOKEN: TypeAdapter[str] = TypeAdapter(PageToken)
_RUN_ID_PREFIX: TypeAdapter[str] = TypeAdapter(RunIdPrefix)
_TASK_PAGE_TOKEN: TypeAdapter[str] = TypeAdapter(TaskPageToken)
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


@dataclass(frozen=True)
class Submission:
    spec: RunSpec
    trigger: TriggerKind
    parent_run_id: str
    idempotency_key: str | None


@dataclass(frozen=True)
class RunQuery:
    project: str | None
    task: str | None
    states: list[RunState]
    page_size: int | None
    page_token: str | None
    id_prefix: str | None = None
    organisation: str | None = None
    parent_run_id: str | None = None


@dataclass(frozen=True)
class TaskQuery:
    organisation: str | None
    project: str | None
    page_size: int | None
    page_token: str | None


def submit_request(request: ame_service_pb2.SubmitRunRequest) -> Submission:
    """The run asked for; raises DecodeError with a readable message when any part is invalid."""
    spec = codecs.run_spec_from_pb(request.spec)
    if request.trigger not in _KNOWN_TRIGGERS:
        raise DecodeError(f"trigger: unknown trigger kind {request.trigger}")
    trigger = codecs.trigger_from_pb(request.trigger) if request.trigger else TriggerKind.API
    if trigger not in _CLIENT_TRIGGERS:
        raise DecodeError(f"trigger must be one of {sorted(t.value for t in _CLIENT_TRIGGERS)}")
    if request.parent_run_id:
        # Checked for size first: the message echoes it, and gRPC carries messages in a bounded trailer.
        parent = checked(RUN_ID, request.parent_run_id, "parent_run_id")
        try:
            uuid.UUID(parent)
        except ValueError:
            raise DecodeError(f"parent_run_id {parent!r} is not a run id") from None
    key = checked(_IDEMPOTENCY_KEY, request.idempotency_key, "idempotency_key") if request.idempotency_key else None
    return Submission(spec, trigger, request.parent_run_id, key)


def run_id_request(run_id: str) -> str:
    return checked(RUN_ID, run_id, "run_id")


def list_request(request: ame_service_pb2.ListRunsRequest) -> RunQuery:
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise DecodeError(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return RunQuery(
        project=checked(NAME_FILTER, request.project, "project") or None,
        task=checked(NAME_FILTER, request.task, "task") or None,
        states=states_from_pb(list(request.states)),
        page_size=request.page_size or None,
        page_token=checked(_PAGE_TOKEN, request.page_token, "page_token") if request.page_token else None,
        id_prefix=checked(_RUN_ID_PREFIX, request.id_prefix, "id_prefix") or None,
        organisation=checked(NAME_FILTER, request.organisation, "organisation") or None,
        parent_run_id=checked(RUN_ID, request.parent_run_id, "parent_run_id") if request.parent_run_id else None,
    )


def tasks_request(request: ame_service_pb2.ListTasksRequest) -> TaskQuery:
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise DecodeError(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return TaskQuery(
        organisation=checked(NAME_FILTER, request.organisation, "organisation") or None,
        project=checked(NAME_FILTER, request.project, "project") or None,
        page_size=request.page_size or None,
        page_token=checked(_TASK_PAGE_TOKEN, request.page_token, "page_token") if request.page_token else None,
    )


def task_to_pb(task: TaskSummary) -> ame_service_pb2.TaskSummary:
    pb = ame_service_pb2.TaskSummary(
        organisation=task.organisation,
        project=task.project,
        name=task.name,
        project_version_id=task.project_version_id,
    )
    if task.last_run is not None:
        pb.last_run.CopyFrom(run_to_pb(task.last_run))
    return pb


def cancel_request(request: ame_service_pb2.CancelRunRequest) -> tuple[str, str]:
    return run_id_request(request.run_id), checked(_REASON, request.reason, "reason")


def states_from_pb(values: Sequence[int]) -> list[RunState]:
    return [codecs.state_from_pb(v) for v in values]
