"""AmeService over gRPC: the same use cases as REST, with gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import grpc
from grpc.aio import ServicerContext

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame_api import convert
from ame_api.follow import LogFollower
from ame_api.grpc.projects import ProjectMethods
from ame_api.projects import ProjectService
from ame_api.runs import Conflict, InvalidRequest, NotFound, RunService
from ame_platform import telemetry

log = logging.getLogger(__name__)

_Context = ServicerContext[object, object]
_R = TypeVar("_R")


def _status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status a domain error maps to; None for an unexpected error."""
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc.args[0] if exc.args else exc)
    if isinstance(exc, convert.DecodeError | InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    return None


async def _abort(context: _Context, exc: Exception) -> None:
    mapped = _status(exc)
    if mapped is None:
        log.exception("unhandled error in a gRPC call", exc_info=exc)
        mapped = (grpc.StatusCode.INTERNAL, "internal error; see the api service's log")
    await context.abort(*mapped)


def _unary(
    method: Callable[[Any, Any, _Context], Awaitable[_R]],
) -> Callable[[Any, Any, _Context], Awaitable[_R]]:
    """Domain errors become their status codes; anything else INTERNAL with no internals in the message."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: _Context) -> _R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def _caller_trace(context: _Context) -> AbstractContextManager[None]:
    """The caller's trace context (traceparent in the call's metadata), made current for the handler."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return telemetry.extracted(metadata)


class AmeServicer(ProjectMethods, ame_service_pb2_grpc.AmeServiceServicer):
    def __init__(self, runs: RunService, follower: LogFollower, projects: ProjectService) -> None:
        self._runs = runs
        self._follower = follower
        self._projects = projects

    @_unary
    async def SubmitRun(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.SubmitRunRequest, context: _Context
    ) -> ame_service_pb2.SubmitRunResponse:
        spec, trigger, parent_run_id = convert.submit_request(request)
        with _caller_trace(context):
            run = await self._runs.submit(
                spec,
                trigger=trigger,
                parent_run_id=parent_run_id,
                idempotency_key=request.idempotency_key or None,
            )
        return ame_service_pb2.SubmitRunResponse(run=convert.run_to_pb(run))

    @_unary
    async def GetRun(  # noqa: N802
        self, request: ame_service_pb2.GetRunRequest, context: _Context
    ) -> ame_service_pb2.GetRunResponse:
        run = await self._runs.get(request.run_id)
        return ame_service_pb2.GetRunResponse(run=convert.run_to_pb(run))

    @_unary
    async def ListRuns(  # noqa: N802
        self, request: ame_service_pb2.ListRunsRequest, context: _Context
    ) -> ame_service_pb2.ListRunsResponse:
        if request.page_size < 0 or request.page_size > 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be between 0 and 1000")
        states = convert.states_from_pb(list(request.states))
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

    @_unary
    async def CancelRun(  # noqa: N802
        self, request: ame_service_pb2.CancelRunRequest, context: _Context
    ) -> ame_service_pb2.CancelRunResponse:
        run = await self._runs.cancel(request.run_id, request.reason)
        return ame_service_pb2.CancelRunResponse(run=convert.run_to_pb(run))

    async def FollowLogs(  # noqa: N802
        self, request: ame_service_pb2.FollowLogsRequest, context: _Context
    ) -> AsyncIterator[ame_service_pb2.FollowLogsResponse]:
        try:
            await self._runs.get(request.run_id)
            async for event in self._follower.follow(request.run_id, request.from_seq):
                yield convert.follow_event_pb(event)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc)
