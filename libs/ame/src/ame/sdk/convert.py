"""The SDK's conversions between the gRPC contracts and domain types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC

from ame import codecs, log_batches, project_codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.project.v1 import project_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, LogLine, Run, RunAttempt, RunSpec, RunState
from ame.domain.artifacts import Artifact
from ame.domain.data_sets import DataSetSummary
from ame.domain.orchestrations import (
    Orchestration,
    OrchestrationStatus,
    OrchestrationTask,
    TaskKind,
    TaskRun,
    TaskStatus,
)
from ame.domain.projects import ManifestEntry, ProjectVersion
from ame.domain.schedules import Activation, ScheduleSummary
from ame.domain.secrets import SecretInfo
from ame.domain.sources import ProjectSource, SourceState
from ame.domain.tasks import TaskSummary
from ame.domain.webhooks import Webhook, WebhookDelivery


def run_from_pb(pb: run_pb2.Run) -> Run:
    return Run(
        id=pb.id,
        organisation=pb.organisation,
        spec=codecs.run_spec_from_pb(pb.spec),
        state=codecs.state_from_pb(pb.state),
        attempt=pb.attempt,
        exit_code=pb.exit_code if pb.HasField("exit_code") else None,
        reason=pb.reason,
        trigger=codecs.trigger_from_pb(pb.trigger),
        parent_run_id=pb.parent_run_id,
        started_by=pb.started_by,
        created_at=codecs.from_timestamp(pb.created_at),
        started_at=codecs.from_timestamp(pb.started_at) if pb.HasField("started_at") else None,
        finished_at=codecs.from_timestamp(pb.finished_at) if pb.HasField("finished_at") else None,
        updated_at=codecs.from_timestamp(pb.updated_at),
        attempts=tuple(attempt_from_pb(a) for a in pb.attempts),
    )


def attempt_from_pb(pb: run_pb2.RunAttempt) -> RunAttempt:
    return RunAttempt(
        attempt=pb.attempt,
        state=codecs.state_from_pb(pb.state),
        exit_code=pb.exit_code if pb.HasField("exit_code") else None,
        reason=pb.reason,
        launcher_id=pb.launcher_id,
        created_at=codecs.from_timestamp(pb.created_at),
        started_at=codecs.from_timestamp(pb.started_at) if pb.HasField("started_at") else None,
        finished_at=codecs.from_timestamp(pb.finished_at) if pb.HasField("finished_at") else None,
    )


def submit_request(spec: RunSpec, idempotency_key: str | None) -> ame_service_pb2.SubmitRunRequest:
    return ame_service_pb2.SubmitRunRequest(
        spec=codecs.run_spec_to_pb(spec),
        idempotency_key=idempotency_key or "",
        trigger=run_pb2.TRIGGER_KIND_API,
    )


def list_request(
    project: str | None,
    task: str | None,
    states: list[RunState] | None,
    page_size: int,
    page_token: str,
    id_prefix: str | None = None,
    parent_run_id: str | None = None,
) -> ame_service_pb2.ListRunsRequest:
    return ame_service_pb2.ListRunsRequest(
        project=project or "",
        task=task or "",
        states=[codecs.state_to_pb(s) for s in states or []],
        page_size=page_size,
        page_token=page_token,
        id_prefix=id_prefix or "",
        parent_run_id=parent_run_id or "",
    )


def task_from_pb(pb: ame_service_pb2.TaskSummary) -> TaskSummary:
    return TaskSummary(
        organisation=pb.organisation,
        project=pb.project,
        name=pb.name,
        project_version_id=pb.project_version_id,
        last_run=run_from_pb(pb.last_run) if pb.HasField("last_run") else None,
    )


def follow_batch(pb: ame_service_pb2.FollowLogsResponse) -> list[LogLine] | LogEnd:
    """A follow event as a list of lines (one for a server that sends a `line` per line) or the end."""
    kind = pb.WhichOneof("event")
    if kind == "chunk":
        return log_batches.lines_from_pb(pb.chunk.lines)
    if kind == "line":
        return [codecs.log_line_from_pb(pb.line)]
    return codecs.log_end_from_pb(pb.end)


def manifest_to_pb(entries: Iterable[ManifestEntry]) -> list[project_pb2.ManifestEntry]:
    return project_codecs.entries_to_pb(entries)


def manifest_from_pb(entries: Iterable[project_pb2.ManifestEntry]) -> list[ManifestEntry]:
    return project_codecs.entries_from_pb(entries)


def version_from_pb(pb: project_pb2.ProjectVersion) -> ProjectVersion:
    return project_codecs.version_from_pb(pb)


def secret_from_pb(pb: ame_service_pb2.SecretInfo) -> SecretInfo:
    return SecretInfo(
        name=pb.name,
        created_at=pb.created_at.ToDatetime(tzinfo=UTC),
        updated_at=pb.updated_at.ToDatetime(tzinfo=UTC),
    )


def artifact_from_pb(pb: run_pb2.Artifact) -> Artifact:
    return codecs.artifact_from_pb(pb)


def webhook_from_pb(pb: ame_service_pb2.Webhook) -> Webhook:
    return Webhook(
        project=pb.project,
        task=pb.task,
        url=pb.url,
        secret_name=pb.secret_name,
        version_id=pb.version_id,
        deliveries=[
            WebhookDelivery(
                delivery_id=d.delivery_id,
                received_at=d.received_at.ToDatetime(tzinfo=UTC),
                status=d.status,
                outcome=d.outcome,
                run_id=d.run_id,
            )
            for d in pb.deliveries
        ],
    )


def schedule_from_pb(pb: ame_service_pb2.ScheduleSummary) -> ScheduleSummary:
    return ScheduleSummary(
        organisation=pb.organisation,
        project=pb.project,
        task=pb.task,
        cron=pb.cron,
        timezone=pb.timezone,
        catch_up=pb.catch_up,
        overlap=pb.overlap,
        jitter_seconds=pb.jitter_seconds,
        state=pb.state,
        project_version_id=pb.project_version_id,
        next_fire_times=[t.ToDatetime(tzinfo=UTC) for t in pb.next_fire_times],
        last_run_id=pb.last_run_id,
        last_run_state=pb.last_run_state,
        last_run_at=pb.last_run_at.ToDatetime(tzinfo=UTC) if pb.HasField("last_run_at") else None,
    )


def activation_from_pb(pb: ame_service_pb2.ActivateProjectVersionResponse) -> Activation:
    return Activation(
        project=pb.project,
        project_version_id=pb.project_version_id,
        schedules=[schedule_from_pb(s) for s in pb.schedules],
        triggers_enabled=pb.triggers_enabled,
    )


def project_source_from_pb(pb: ame_service_pb2.ProjectSource) -> ProjectSource:
    return ProjectSource(
        id=pb.id,
        url=pb.url,
        branch=pb.branch,
        path=pb.path,
        interval_seconds=pb.interval_seconds,
        secret_name=pb.secret_name,
        hook_secret_name=pb.hook_secret_name,
        hook_url=pb.hook_url,
        state=SourceState(pb.state),
        reason=pb.reason,
        synced_commit=pb.synced_commit,
        synced_at=pb.synced_at.ToDatetime(tzinfo=UTC) if pb.HasField("synced_at") else None,
        project=pb.project,
        version_id=pb.version_id,
        created_at=pb.created_at.ToDatetime(tzinfo=UTC),
        next_sync_at=pb.next_sync_at.ToDatetime(tzinfo=UTC),
    )


def orchestration_from_pb(pb: ame_service_pb2.Orchestration) -> Orchestration:
    return Orchestration(
        id=pb.id,
        name=pb.name,
        status=OrchestrationStatus(pb.status),
        filename=pb.filename,
        sha=pb.sha,
        project=pb.project,
        project_version_id=pb.project_version_id,
        packaging_run_id=pb.packaging_run_id,
        error=pb.error,
        created_at=codecs.from_timestamp(pb.created_at),
        updated_at=codecs.from_timestamp(pb.updated_at),
    )


def orchestration_task_from_pb(pb: ame_service_pb2.OrchestrationTask) -> OrchestrationTask:
    return OrchestrationTask(
        id=pb.id,
        name=pb.name,
        orchestration_id=pb.orchestration_id,
        orchestration=pb.orchestration,
        kind=TaskKind(pb.type),
        schedule=pb.schedule,
        last_run_status=pb.last_run_status,
        status=TaskStatus(pb.status),
        active=pb.active,
        killed=pb.killed,
        created_at=codecs.from_timestamp(pb.created_at),
        updated_at=codecs.from_timestamp(pb.updated_at),
    )


def task_run_from_pb(pb: ame_service_pb2.OrchestrationTaskRun) -> TaskRun:
    return TaskRun(
        task_id=pb.task_id,
        run_id=pb.run_id,
        status=pb.status,
        state=codecs.state_from_pb(pb.state),
        created_at=codecs.from_timestamp(pb.created_at),
        updated_at=codecs.from_timestamp(pb.updated_at),
    )


def data_set_from_pb(pb: ame_service_pb2.DataSet) -> DataSetSummary:
    return DataSetSummary(
        project=pb.project,
        name=pb.name,
        status=pb.status,
        size_bytes=pb.size_bytes,
        file_count=pb.file_count,
        version_id=pb.version_id,
        run_id=pb.run_id,
        reason=pb.reason,
        path=pb.path,
        definition_hash=pb.definition_hash,
        generation=pb.generation,
        updated_at=pb.updated_at.ToDatetime(tzinfo=UTC) if pb.HasField("updated_at") else None,
    )
