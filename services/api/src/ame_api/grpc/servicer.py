"""AmeService over gRPC: the same use cases as REST, with gRPC status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

import grpc
from grpc.aio import ServicerContext

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame_api import convert
from ame_api.follow import LogFollower
from ame_api.runs import NotFound, RunService
from ame_platform import telemetry

_Context = ServicerContext[object, object]


def _caller_trace(context: _Context) -> AbstractContextManager[None]:
    """The caller's trace context (traceparent in the call's metadata), made current for the handler."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return telemetry.extracted(metadata)


class AmeServicer(ame_service_pb2_grpc.AmeServiceServicer):
    def __init__(self, runs: RunService, follower: LogFollower) -> None:
        self._runs = runs
        self._follower = follower

    async def SubmitRun(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.SubmitRunRequest, context: _Context
    ) -> ame_service_pb2.SubmitRunResponse:
        try:
            spec, trigger = convert.submit_request(request)
        except convert.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        with _caller_trace(context):
            run = await self._runs.submit(
                spec,
                trigger=trigger,
                parent_run_id=request.parent_run_id,
                idempotency_key=request.idempotency_key or None,
            )
        return ame_service_pb2.SubmitRunResponse(run=convert.run_to_pb(run))

    async def GetRun(  # noqa: N802
        self, request: ame_service_pb2.GetRunRequest, context: _Context
    ) -> ame_service_pb2.GetRunResponse:
        try:
            run = await self._runs.get(request.run_id)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return ame_service_pb2.GetRunResponse(run=convert.run_to_pb(run))

    async def ListRuns(  # noqa: N802
        self, request: ame_service_pb2.ListRunsRequest, context: _Context
    ) -> ame_service_pb2.ListRunsResponse:
        if request.page_size < 0 or request.page_size > 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be between 0 and 1000")
        try:
            states = convert.states_from_pb(list(request.states))
        except convert.DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        page = await self._runs.list(
            project=request.project,
            task=request.task,
            states=states,
            page_size=request.page_size or None,
            page_token=request.page_token or None,
        )
        return ame_service_pb2.ListRunsResponse(
            runs=[convert.run_to_pb(r) for r in page.runs], next_page_token=page.next_page_token
        )

    async def CancelRun(  # noqa: N802
        self, request: ame_service_pb2.CancelRunRequest, context: _Context
    ) -> ame_service_pb2.CancelRunResponse:
        try:
            run = await self._runs.cancel(request.run_id, request.reason)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return ame_service_pb2.CancelRunResponse(run=convert.run_to_pb(run))

    async def FollowLogs(  # noqa: N802
        self, request: ame_service_pb2.FollowLogsRequest, context: _Context
    ) -> AsyncIterator[ame_service_pb2.FollowLogsResponse]:
        try:
            await self._runs.get(request.run_id)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        async for event in self._follower.follow(request.run_id, request.from_seq):
            yield convert.follow_event_pb(event)
