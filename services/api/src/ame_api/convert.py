"""The only module of the api service where generated contracts meet domain types."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from ame import bus_messages, codecs, log_batches, project_codecs
from ame.codecs import DecodeError, StateEvent
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.log.v1 import log_pb2
from ame.contracts.project.v1 import project_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, LogLine, Run, RunAttempt, RunSpec, RunState, TriggerKind, errors
from ame.domain.data_sets import DataSetSummary
from ame.domain.limits import (
    MAX_PAGE_SIZE,
    IdempotencyKey,
    LogSeq,
    NameFilter,
    PageToken,
    Reason,
    RunIdPrefix,
    RunIdText,
    TaskPageToken,
)
from ame.domain.orchestrations import Orchestration, OrchestrationTask, TaskRun
from ame.domain.principals import Principal, Scope
from ame.domain.projects import ManifestEntry, ProjectVersion
from ame.domain.quotas import OrganisationLimits
from ame.domain.schedules import Activation, ScheduleSummary
from ame.domain.sources import ProjectSource
from ame.domain.tasks import TaskSummary
from ame_api.repositories.tokens import Organisation, TokenRecord

if TYPE_CHECKING:
    from ame_api.repositories.secrets import SecretRow
    from ame_api.secrets.service import Resolved
    from ame_api.webhooks import HookListing

__all__ = ["DecodeError", "StateEvent"]

_T = TypeVar("_T")


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


def parse_manifest_object(data: bytes) -> tuple[str, list[ManifestEntry]]:
    """A stored manifest (a project or data set version's): (version id, entries); raises DecodeError."""
    return project_codecs.parse_manifest_object(data)


def data_set_to_pb(row: DataSetSummary) -> ame_service_pb2.DataSet:
    pb = ame_service_pb2.DataSet(
        project=row.project,
        name=row.name,
        status=row.status,
        size_bytes=row.size_bytes,
        file_count=row.file_count,
        version_id=row.version_id,
        run_id=row.run_id,
        reason=row.reason,
        path=row.path,
        definition_hash=row.definition_hash,
        generation=row.generation,
    )
    if row.updated_at is not None:
        pb.updated_at.FromDatetime(row.updated_at)
    return pb


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


# gRPC requests, validated with the same limits as the REST schemas (ame.domain.limits) -----------------

# Triggers a client may claim for itself; schedule and pipeline runs are created by AME only.
_CLIENT_TRIGGERS = {TriggerKind.API, TriggerKind.CLI}
_KNOWN_TRIGGERS = frozenset(run_pb2.TriggerKind.values())

_RUN_ID: TypeAdapter[str] = TypeAdapter(RunIdText)
_NAME_FILTER: TypeAdapter[str] = TypeAdapter(NameFilter)
_REASON: TypeAdapter[str] = TypeAdapter(Reason)
_PAGE_TOKEN: TypeAdapter[str] = TypeAdapter(PageToken)
_RUN_ID_PREFIX: TypeAdapter[str] = TypeAdapter(RunIdPrefix)
_TASK_PAGE_TOKEN: TypeAdapter[str] = TypeAdapter(TaskPageToken)
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)
_LOG_SEQ: TypeAdapter[int] = TypeAdapter(LogSeq)


def _checked(adapter: TypeAdapter[_T], value: Any, field: str) -> _T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise DecodeError("; ".join(f"{field}: {p['message']}" for p in errors.problems(exc.errors()))) from None


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
        parent = _checked(_RUN_ID, request.parent_run_id, "parent_run_id")
        try:
            uuid.UUID(parent)
        except ValueError:
            raise DecodeError(f"parent_run_id {parent!r} is not a run id") from None
    key = _checked(_IDEMPOTENCY_KEY, request.idempotency_key, "idempotency_key") if request.idempotency_key else None
    return Submission(spec, trigger, request.parent_run_id, key)


def run_id_request(run_id: str) -> str:
    return _checked(_RUN_ID, run_id, "run_id")


def list_request(request: ame_service_pb2.ListRunsRequest) -> RunQuery:
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise DecodeError(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return RunQuery(
        project=_checked(_NAME_FILTER, request.project, "project") or None,
        task=_checked(_NAME_FILTER, request.task, "task") or None,
        states=states_from_pb(list(request.states)),
        page_size=request.page_size or None,
        page_token=_checked(_PAGE_TOKEN, request.page_token, "page_token") if request.page_token else None,
        id_prefix=_checked(_RUN_ID_PREFIX, request.id_prefix, "id_prefix") or None,
        organisation=_checked(_NAME_FILTER, request.organisation, "organisation") or None,
        parent_run_id=_checked(_RUN_ID, request.parent_run_id, "parent_run_id") if request.parent_run_id else None,
    )


def tasks_request(request: ame_service_pb2.ListTasksRequest) -> TaskQuery:
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        raise DecodeError(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    return TaskQuery(
        organisation=_checked(_NAME_FILTER, request.organisation, "organisation") or None,
        project=_checked(_NAME_FILTER, request.project, "project") or None,
        page_size=request.page_size or None,
        page_token=_checked(_TASK_PAGE_TOKEN, request.page_token, "page_token") if request.page_token else None,
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
    return run_id_request(request.run_id), _checked(_REASON, request.reason, "reason")


def follow_request(request: ame_service_pb2.FollowLogsRequest) -> tuple[str, int]:
    return run_id_request(request.run_id), _checked(_LOG_SEQ, request.from_seq, "from_seq")


def states_from_pb(values: Sequence[int]) -> list[RunState]:
    return [codecs.state_from_pb(v) for v in values]


class LineBatch:
    """Consecutive lines of one run attempt, kept in their wire form from the bus or the archive to the follower's
    client: a chatty run's followers pass tens of thousands of lines a second, and turning each into a domain
    LogLine and back cost more than everything else they do."""

    __slots__ = ("attempt", "lines")

    def __init__(self, attempt: int, lines: Sequence[log_pb2.LogLine]) -> None:
        self.attempt = attempt
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def first_seq(self) -> int:
        return self.lines[0].seq

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq

    def since(self, seq: int) -> LineBatch:
        """The lines numbered `seq` and after."""
        if not self.lines or self.first_seq >= seq:
            return self
        return LineBatch(self.attempt, [line for line in self.lines if line.seq >= seq])

    def before(self, seq: int) -> LineBatch:
        """The lines numbered below `seq`."""
        if not self.lines or self.last_seq < seq:
            return self
        return LineBatch(self.attempt, [line for line in self.lines if line.seq < seq])

    def to_domain(self) -> list[LogLine]:
        return log_batches.lines_from_pb(self.lines)

    def to_json(self) -> str:
        """A JSON array of the lines in their REST form (LogLine's JSON)."""
        return log_batches.lines_json(self.lines)


def follow_end_pb(end: LogEnd) -> ame_service_pb2.FollowLogsResponse:
    return ame_service_pb2.FollowLogsResponse(end=codecs.log_end_to_pb(end))


def follow_chunk_pb(run_id: str, batch: LineBatch) -> ame_service_pb2.FollowLogsResponse:
    response = ame_service_pb2.FollowLogsResponse()
    response.chunk.run_id = run_id
    response.chunk.attempt = batch.attempt
    response.chunk.lines.extend(batch.lines)
    return response


def follow_lines_pb(batch: LineBatch) -> list[ame_service_pb2.FollowLogsResponse]:
    """One `line` event per line, for clients that did not ask for batches."""
    return [ame_service_pb2.FollowLogsResponse(line=line) for line in batch.lines]


def chunk_events(data: bytes) -> tuple[int, LineBatch, LogEnd | None]:
    chunk = codecs.parse_log_chunk(data)
    end = codecs.log_end_from_pb(chunk.end) if chunk.HasField("end") else None
    return chunk.attempt, LineBatch(chunk.attempt, chunk.lines), end


def history_request(run_id: str, from_seq: int) -> bytes:
    return log_pb2.HistoryRequest(run_id=run_id, from_seq=from_seq).SerializeToString()


def history_reply(data: bytes) -> tuple[LineBatch, LogEnd | None, bool]:
    reply = log_pb2.HistoryReply()
    reply.ParseFromString(data)
    if reply.error:
        raise DecodeError(reply.error)
    end = codecs.log_end_from_pb(reply.end) if reply.HasField("end") else None
    return LineBatch(reply.attempt, reply.lines), end, reply.has_more


def parse_schedule_fired(data: bytes) -> bus_messages.FiredSlot:
    """The run a schedule slot asks for, the idempotency key that makes it one run per slot, whose it is and
    what it does while the schedule's previous run still runs."""
    return bus_messages.parse_schedule_fired_slot(data)


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


def manifest_object(version_id: str, entries: Iterable[ManifestEntry]) -> bytes:
    return project_codecs.manifest_object(version_id, entries)


def manifest_to_pb(entries: Iterable[ManifestEntry]) -> list[project_pb2.ManifestEntry]:
    return project_codecs.entries_to_pb(entries)


def secret_info_pb(row: SecretRow) -> ame_service_pb2.SecretInfo:
    """A secret as listings show it: its name and times, never its value."""
    info = ame_service_pb2.SecretInfo(name=row.name)
    info.created_at.FromDatetime(row.created_at)
    info.updated_at.FromDatetime(row.updated_at)
    return info


def resolved_secret_pb(resolved: Resolved) -> ame_service_pb2.ResolvedSecret:
    return ame_service_pb2.ResolvedSecret(
        vault=resolved.vault,
        key=resolved.key,
        value=resolved.value or "",
        found=resolved.value is not None,
        problem=resolved.problem,
    )


# Organisation limits ---------------------------------------------------------------------------------------

_ORGANISATION: TypeAdapter[str] = TypeAdapter(NameFilter)


def organisation_request(value: str) -> str:
    """An organisation name from a request; empty stands for the server's own."""
    return _checked(_ORGANISATION, value, "organisation")


def limits_request(request: ame_service_pb2.SetOrganisationLimitsRequest) -> tuple[str, OrganisationLimits]:
    pb = request.limits
    try:
        limits = OrganisationLimits(
            max_runs=pb.max_runs if pb.HasField("max_runs") else None,
            max_gpus=pb.max_gpus if pb.HasField("max_gpus") else None,
            default_timeout_seconds=pb.default_timeout_seconds if pb.HasField("default_timeout_seconds") else None,
        )
    except ValidationError as exc:
        raise DecodeError(errors.describe(exc)) from None
    return organisation_request(request.organisation), limits


def limits_to_pb(limits: OrganisationLimits) -> ame_service_pb2.OrganisationLimits:
    pb = ame_service_pb2.OrganisationLimits()
    if limits.max_runs is not None:
        pb.max_runs = limits.max_runs
    if limits.max_gpus is not None:
        pb.max_gpus = limits.max_gpus
    if limits.default_timeout_seconds is not None:
        pb.default_timeout_seconds = limits.default_timeout_seconds
    return pb


# Access: who am I, tokens, organisations ---------------------------------------------------------------------


def whoami_pb(principal: Principal) -> ame_service_pb2.WhoAmIResponse:
    return ame_service_pb2.WhoAmIResponse(
        organisation=principal.organisation,
        scope=principal.scope.value,
        kind=principal.kind.value,
        token_id=principal.subject,
    )


def token_to_pb(record: TokenRecord) -> ame_service_pb2.ApiToken:
    pb = ame_service_pb2.ApiToken(
        id=record.id,
        organisation=record.organisation,
        scope=record.scope.value,
        name=record.name,
        created_by=record.created_by,
        created_at=codecs.timestamp(record.created_at),
    )
    if record.expires_at is not None:
        pb.expires_at.CopyFrom(codecs.timestamp(record.expires_at))
    if record.revoked_at is not None:
        pb.revoked_at.CopyFrom(codecs.timestamp(record.revoked_at))
    return pb


def scope_request(value: str) -> Scope:
    """A scope named in a request; empty for `run`."""
    try:
        return Scope(value or Scope.RUN.value)
    except ValueError:
        raise DecodeError(f"scope must be one of {', '.join(s.value for s in Scope)}, not {value[:40]!r}") from None


def organisation_to_pb(org: Organisation) -> ame_service_pb2.Organisation:
    return ame_service_pb2.Organisation(id=org.id, created_at=codecs.timestamp(org.created_at))


def webhook_pb(hook: HookListing) -> ame_service_pb2.Webhook:
    """A hook as `ame hooks list` shows it: URL, the secret's name (never its value), recent deliveries."""
    pb = ame_service_pb2.Webhook(
        project=hook.project,
        task=hook.task,
        url=hook.url,
        secret_name=hook.secret_name,
        version_id=hook.version_id,
    )
    for d in hook.deliveries:
        delivery = pb.deliveries.add(delivery_id=d.delivery_id, status=d.status, outcome=d.outcome, run_id=d.run_id)
        delivery.received_at.FromDatetime(d.received_at)
    return pb


# Schedules.


@dataclass(frozen=True)
class ScheduleQuery:
    organisation: str
    name: str
    project: str | None


def schedule_request(request: ame_service_pb2.ScheduleRequest) -> ScheduleQuery:
    if not request.name:
        raise DecodeError("name: give the schedule's (task's) name")
    return ScheduleQuery(
        organisation=_checked(_NAME_FILTER, request.organisation, "organisation"),
        name=_checked(_NAME_FILTER, request.name, "name"),
        project=_checked(_NAME_FILTER, request.project, "project") or None,
    )


def activate_request(request: ame_service_pb2.ActivateProjectVersionRequest) -> tuple[str, str, str]:
    """(organisation, project, version id)."""
    if not request.project:
        raise DecodeError("project: give the project's name")
    return (
        _checked(_NAME_FILTER, request.organisation, "organisation"),
        _checked(_NAME_FILTER, request.project, "project"),
        request.version_id[:200],
    )


def schedule_to_pb(summary: ScheduleSummary) -> ame_service_pb2.ScheduleSummary:
    pb = ame_service_pb2.ScheduleSummary(
        organisation=summary.organisation,
        project=summary.project,
        task=summary.task,
        cron=summary.cron,
        timezone=summary.timezone,
        catch_up=summary.catch_up,
        overlap=summary.overlap,
        jitter_seconds=summary.jitter_seconds,
        state=summary.state,
        project_version_id=summary.project_version_id,
        next_fire_times=[codecs.timestamp(t) for t in summary.next_fire_times],
        last_run_id=summary.last_run_id,
        last_run_state=summary.last_run_state,
    )
    if summary.last_run_at is not None:
        pb.last_run_at.CopyFrom(codecs.timestamp(summary.last_run_at))
    return pb


def activation_to_pb(activation: Activation) -> ame_service_pb2.ActivateProjectVersionResponse:
    return ame_service_pb2.ActivateProjectVersionResponse(
        project=activation.project,
        project_version_id=activation.project_version_id,
        schedules=[schedule_to_pb(s) for s in activation.schedules],
        triggers_enabled=activation.triggers_enabled,
    )


# Git project sources.


def project_source_to_pb(source: ProjectSource) -> ame_service_pb2.ProjectSource:
    """A source as `ame projectsrc list` shows it: secret names only, never a value."""
    pb = ame_service_pb2.ProjectSource(
        id=source.id,
        url=source.url,
        branch=source.branch,
        path=source.path,
        interval_seconds=source.interval_seconds,
        secret_name=source.secret_name,
        hook_secret_name=source.hook_secret_name,
        hook_url=source.hook_url,
        state=source.state.value,
        reason=source.reason,
        synced_commit=source.synced_commit,
        project=source.project,
        version_id=source.version_id,
    )
    if source.synced_at is not None:
        pb.synced_at.FromDatetime(source.synced_at)
    pb.created_at.FromDatetime(source.created_at)
    pb.next_sync_at.FromDatetime(source.next_sync_at)
    return pb


# Orchestrations (seed 004).


def orchestration_to_pb(o: Orchestration) -> ame_service_pb2.Orchestration:
    return ame_service_pb2.Orchestration(
        id=o.id,
        name=o.name,
        status=o.status.value,
        filename=o.filename,
        sha=o.sha,
        project=o.project,
        project_version_id=o.project_version_id,
        packaging_run_id=o.packaging_run_id,
        error=o.error,
        created_at=codecs.timestamp(o.created_at),
        updated_at=codecs.timestamp(o.updated_at),
    )


def orchestration_task_to_pb(t: OrchestrationTask) -> ame_service_pb2.OrchestrationTask:
    return ame_service_pb2.OrchestrationTask(
        id=t.id,
        name=t.name,
        orchestration_id=t.orchestration_id,
        orchestration=t.orchestration,
        type=t.kind.value,
        schedule=t.schedule,
        last_run_status=t.last_run_status,
        status=t.status.value,
        active=t.active,
        killed=t.killed,
        created_at=codecs.timestamp(t.created_at),
        updated_at=codecs.timestamp(t.updated_at),
    )


def task_run_to_pb(r: TaskRun) -> ame_service_pb2.OrchestrationTaskRun:
    return ame_service_pb2.OrchestrationTaskRun(
        task_id=r.task_id,
        run_id=r.run_id,
        status=r.status,
        state=codecs.state_to_pb(r.state),
        created_at=codecs.timestamp(r.created_at),
        updated_at=codecs.timestamp(r.updated_at),
    )
