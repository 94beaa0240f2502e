"""Orchestrations (seed 004): orchestrations, their tasks and the runs of those tasks, as the API shows them."""

from __future__ import annotations

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.domain.orchestrations import Orchestration, OrchestrationTask, TaskRun


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
