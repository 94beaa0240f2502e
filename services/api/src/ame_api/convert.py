"""The only module of the api service where generated contracts meet domain types."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from ame import codecs, project_codecs
from ame.codecs import DecodeError, StateEvent
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.log.v1 import log_pb2
from ame.contracts.project.v1 import project_pb2
from ame.contracts.run.v1 import run_pb2
from ame.contracts.trigger.v1 import trigger_pb2
from ame.domain import LogEnd, LogLine, Run, RunSpec, RunState, TriggerKind
from ame.domain.projects import ManifestEntry, ProjectVersion

__all__ = ["DecodeError", "StateEvent"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def launch_command(run_id: str, attempt: int, organisation: str, spec: RunSpec) -> bytes:
    return run_pb2.LaunchRun(
        run_id=run_id,
        attempt=attempt,
        organisation=organisation,
        spec=codecs.run_spec_to_pb(spec),
        requested_at=codecs.now_pb(),
    ).SerializeToString()


def cancel_requested(run_id: str, attempt: int, reason: str) -> bytes:
    return run_pb2.RunCancelRequested(
        run_id=run_id, attempt=attempt, reason=reason, requested_at=codecs.now_pb()
    ).SerializeToString()


def state_changed(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    return codecs.state_changed_pb(run_id, attempt, state, exit_code, reason).SerializeToString()


def parse_state_changed(data: bytes) -> StateEvent:
    return codecs.parse_state_changed(data)


def end_chunk(run_id: str, attempt: int, state: RunState, exit_code: int | None, reason: str) -> bytes:
    end = codecs.log_end_to_pb(LogEnd(state=state, exit_code=exit_code, reason=reason))
    return log_pb2.LogChunk(run_id=run_id, attempt=attempt, end=end).SerializeToString()


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
        created_at=codecs.timestamp(run.created_at),
        updated_at=codecs.timestamp(run.updated_at),
    )
    if run.exit_code is not None:
        pb.exit_code = run.exit_code
    if run.started_at is not None:
        pb.started_at.CopyFrom(codecs.timestamp(run.started_at))
    if run.finished_at is not None:
        pb.finished_at.CopyFrom(codecs.timestamp(run.finished_at))
    return pb


# Triggers a client may claim for itself; schedule and pipeline runs are created by AME only.
_CLIENT_TRIGGERS = {TriggerKind.API, TriggerKind.CLI}


def submit_request(request: ame_service_pb2.SubmitRunRequest) -> tuple[RunSpec, TriggerKind, str]:
    """Spec, trigger and parent run id; raises DecodeError with a readable message when any is invalid."""
    spec = codecs.run_spec_from_pb(request.spec)
    trigger = codecs.trigger_from_pb(request.trigger) if request.trigger else TriggerKind.API
    if trigger not in _CLIENT_TRIGGERS:
        raise DecodeError(f"trigger must be one of {sorted(t.value for t in _CLIENT_TRIGGERS)}")
    if request.parent_run_id:
        try:
            uuid.UUID(request.parent_run_id)
        except ValueError:
            raise DecodeError(f"parent_run_id {request.parent_run_id!r} is not a run id") from None
    return spec, trigger, request.parent_run_id


def states_from_pb(values: list[int]) -> list[RunState]:
    return [codecs.state_from_pb(v) for v in values]


def follow_event_pb(event: LogLine | LogEnd) -> ame_service_pb2.FollowLogsResponse:
    if isinstance(event, LogLine):
        return ame_service_pb2.FollowLogsResponse(line=codecs.log_line_to_pb(event))
    return ame_service_pb2.FollowLogsResponse(end=codecs.log_end_to_pb(event))


def chunk_events(data: bytes) -> tuple[str, int, list[LogLine], LogEnd | None]:
    chunk = codecs.parse_log_chunk(data)
    end = codecs.log_end_from_pb(chunk.end) if chunk.HasField("end") else None
    return chunk.run_id, chunk.attempt, [codecs.log_line_from_pb(line) for line in chunk.lines], end


def history_request(run_id: str, from_seq: int) -> bytes:
    return log_pb2.HistoryRequest(run_id=run_id, from_seq=from_seq).SerializeToString()


def history_reply(data: bytes) -> tuple[int, list[LogLine], LogEnd | None, bool]:
    reply = log_pb2.HistoryReply()
    reply.ParseFromString(data)
    if reply.error:
        raise DecodeError(reply.error)
    end = codecs.log_end_from_pb(reply.end) if reply.HasField("end") else None
    return reply.attempt, [codecs.log_line_from_pb(line) for line in reply.lines], end, reply.has_more


def parse_schedule_fired(data: bytes) -> tuple[RunSpec, str]:
    """The run a schedule slot asks for, and the idempotency key that makes it one run per slot."""
    pb = trigger_pb2.ScheduleFired()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable schedule event: {exc}") from exc
    if not pb.schedule.id:
        raise DecodeError("schedule event without a schedule id")
    return codecs.run_spec_from_pb(pb.schedule.spec), f"cron:{pb.schedule.id}:{pb.slot.seconds}"


# Project versions.


def project_version_created(project_id: str, version: ProjectVersion) -> bytes:
    return project_pb2.ProjectVersionCreated(
        project=project_pb2.Project(id=project_id, organisation=version.organisation, name=version.project),
        version=project_codecs.version_to_pb(version, project_id),
    ).SerializeToString()


def manifest_from_pb(entries: Iterable[project_pb2.ManifestEntry]) -> list[ManifestEntry]:
    """Raises DecodeError for a bad entry."""
    return project_codecs.entries_from_pb(entries)


def version_to_pb(version: ProjectVersion) -> project_pb2.ProjectVersion:
    return project_codecs.version_to_pb(version)


def manifest_to_pb(entries: Iterable[ManifestEntry]) -> list[project_pb2.ManifestEntry]:
    return project_codecs.entries_to_pb(entries)
