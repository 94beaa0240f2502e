"""AmeService over gRPC: the same use cases as REST, with gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

import grpc

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame_api import convert
from ame_api.artifacts import ArtifactService
from ame_api.auth import TokenService
from ame_api.convert import LineBatch
from ame_api.follow import LogFollower
from ame_api.grpc.access import AccessMethods
from ame_api.grpc.artifacts import ArtifactMethods
from ame_api.grpc.auth import caller
from ame_api.grpc.data_sets import DataSetMethods
from ame_api.grpc.decoding import Refused
from ame_api.grpc.errors import Context, abort_for, details, unary
from ame_api.grpc.models import ModelMethods
from ame_api.grpc.orchestrations import OrchestrationMethods
from ame_api.grpc.projects import ProjectMethods
from ame_api.grpc.schedules import ScheduleMethods
from ame_api.grpc.secrets import SecretMethods
from ame_api.grpc.sources import SourceMethods
from ame_api.grpc.webhooks import WebhookMethods
from ame_api.models import ModelService
from ame_api.orchestrations import OrchestrationService
from ame_api.projects import ProjectService
from ame_api.runs import RunService
from ame_api.schedules import ScheduleService
from ame_api.secrets.service import SecretService
from ame_api.sources.service import SourceService
from ame_api.tasks import TaskService
from ame_api.webhooks import WebhookService
from ame_platform import telemetry

log = logging.getLogger(__name__)


def _caller_trace(context: Context) -> AbstractContextManager[None]:
    """The caller's trace context (traceparent in the call's metadata), made current for the handler."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return telemetry.extracted(metadata)


class AmeServicer(
    ProjectMethods,
    SecretMethods,
    ArtifactMethods,
    AccessMethods,
    WebhookMethods,
    ScheduleMethods,
    SourceMethods,
    ModelMethods,
    OrchestrationMethods,
    DataSetMethods,
    ame_service_pb2_grpc.AmeServiceServicer,
):
    def __init__(
        self,
        runs: RunService,
        follower: LogFollower,
        projects: ProjectService,
        tasks: TaskService,
        tokens: TokenService,
        secrets: SecretService,
        *,
        artifacts: ArtifactService,
        webhooks: WebhookService | None = None,
        schedules: ScheduleService | None = None,
        sources: SourceService | None = None,
        models: ModelService | None = None,
        orchestrations: OrchestrationService | None = None,
        retry_after_seconds: int = 2,
    ) -> None:
        if models is not None:
            self._models = models
        if orchestrations is not None:
            self._orchestrations = orchestrations
        self._artifacts = artifacts
        self._sources = sources
        self._webhooks = webhooks
        if schedules is not None:
            self._schedules = schedules
        self._runs = runs
        self._follower = follower
        self._projects = projects
        self._tasks = tasks
        self._tokens = tokens
        self._secrets = secrets
        self.retry_after_seconds = retry_after_seconds

    @unary
    async def SubmitRun(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.SubmitRunRequest, context: Context
    ) -> ame_service_pb2.SubmitRunResponse:
        submission = convert.submit_request(request)
        with _caller_trace(context):
            run = await self._runs.submit(
                caller(),
                submission.spec,
                trigger=submission.trigger,
                parent_run_id=submission.parent_run_id,
                idempotency_key=submission.idempotency_key,
            )
        return ame_service_pb2.SubmitRunResponse(run=convert.run_to_pb(run))

    @unary
    async def GetRun(  # noqa: N802
        self, request: ame_service_pb2.GetRunRequest, context: Context
    ) -> ame_service_pb2.GetRunResponse:
        run = await self._runs.get(caller(), convert.run_id_request(request.run_id))
        return ame_service_pb2.GetRunResponse(run=convert.run_to_pb(run))

    @unary
    async def ListRuns(  # noqa: N802
        self, request: ame_service_pb2.ListRunsRequest, context: Context
    ) -> ame_service_pb2.ListRunsResponse:
        query = convert.list_request(request)
        page = await self._runs.list(
            caller(),
            project=query.project,
            task=query.task,
            states=query.states,
            page_size=query.page_size,
            page_token=query.page_token,
            id_prefix=query.id_prefix,
            organisation=query.organisation,
            parent_run_id=query.parent_run_id,
        )
        return ame_service_pb2.ListRunsResponse(
            runs=[convert.run_to_pb(r) for r in page.runs], next_page_token=page.next_page_token
        )

    @unary
    async def ListTasks(  # noqa: N802
        self, request: ame_service_pb2.ListTasksRequest, context: Context
    ) -> ame_service_pb2.ListTasksResponse:
        query = convert.tasks_request(request)
        page = await self._tasks.list(
            caller(),
            organisation=query.organisation,
            project=query.project,
            page_size=query.page_size,
            page_token=query.page_token,
        )
        return ame_service_pb2.ListTasksResponse(
            tasks=[convert.task_to_pb(t) for t in page.tasks], next_page_token=page.next_page_token
        )

    @unary
    async def SetOrganisationLimits(  # noqa: N802
        self, request: ame_service_pb2.SetOrganisationLimitsRequest, context: Context
    ) -> ame_service_pb2.SetOrganisationLimitsResponse:
        organisation, limits = convert.limits_request(request)
        view = await self._runs.admission.set_limits(organisation or caller().organisation, limits)
        return ame_service_pb2.SetOrganisationLimitsResponse(limits=convert.limits_to_pb(view.limits))

    @unary
    async def GetOrganisationLimits(  # noqa: N802
        self, request: ame_service_pb2.GetOrganisationLimitsRequest, context: Context
    ) -> ame_service_pb2.GetOrganisationLimitsResponse:
        organisation = convert.organisation_request(request.organisation) or caller().organisation
        view = await self._runs.admission.get_limits(organisation)
        return ame_service_pb2.GetOrganisationLimitsResponse(
            limits=convert.limits_to_pb(view.limits),
            runs_in_use=view.runs_in_use,
            gpus_in_use=view.gpus_in_use,
            runs_waiting=view.runs_waiting,
        )

    @unary
    async def CancelRun(  # noqa: N802
        self, request: ame_service_pb2.CancelRunRequest, context: Context
    ) -> ame_service_pb2.CancelRunResponse:
        run_id, reason = convert.cancel_request(request)
        run = await self._runs.cancel(caller(), run_id, reason)
        return ame_service_pb2.CancelRunResponse(run=convert.run_to_pb(run))

    async def FollowLogs(  # noqa: N802
        self, request: ame_service_pb2.FollowLogsRequest, context: Context
    ) -> AsyncIterator[ame_service_pb2.FollowLogsResponse]:
        try:
            if isinstance(request, Refused):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message))
            run_id, from_seq = convert.follow_request(request)
            principal = caller()
            await self._runs.get(principal, run_id)
            async for event in self._follower.follow(principal, run_id, from_seq):
                if not isinstance(event, LineBatch):
                    yield convert.follow_end_pb(event)
                elif request.batched:
                    yield convert.follow_chunk_pb(run_id, event)
                else:
                    # A client from before batching: one message per line, as it expects.
                    for response in convert.follow_lines_pb(event):
                        yield response
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(context, exc, self.retry_after_seconds, "FollowLogs")
