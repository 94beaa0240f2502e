"""AmeService over gRPC: the same use cases as REST, with gRPC status codes."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import grpc
from grpc.aio import ServicerContext

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame_api import convert
from ame_api.convert import LineBatch
from ame_api.follow import LogFollower
from ame_api.grpc.decoding import Refused
from ame_api.runs import Conflict, InvalidRequest, NotFound, RunService
from ame_platform import telemetry
from ame_platform.faults import is_transient

log = logging.getLogger(__name__)

_Context = ServicerContext[object, object]
_R = TypeVar("_R")


# Kept short: a status message travels in a trailer, whose size peers may limit (grpc.max_metadata_size).
_MAX_DETAILS = 2000


def _details(text: str) -> str:
    return text if len(text) <= _MAX_DETAILS else f"{text[: _MAX_DETAILS - 20]}… ({len(text)} characters)"


def _status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status a domain error maps to; None for an unexpected error."""
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, _details(str(exc.args[0] if exc.args else exc))
    if isinstance(exc, convert.DecodeError | InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, _details(str(exc))
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS, _details(str(exc))
    return None


async def _abort(context: _Context, exc: Exception, retry_after_seconds: int, method: str) -> None:
    mapped = _status(exc)
    if mapped is not None:
        await context.abort(*mapped)
    if is_transient(exc):
        log.warning("%s: a dependency is unavailable: %r", method, exc)
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "service temporarily unavailable; retry later",
            trailing_metadata=(("retry-after", str(retry_after_seconds)),),
        )
    rid = uuid.uuid4().hex
    log.error("unhandled error in gRPC %s (request id %s)", method, rid, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error; see the api service's log, request id {rid}",
        trailing_metadata=(("x-request-id", rid),),
    )


def _unary(
    method: Callable[[Any, Any, _Context], Awaitable[_R]],
) -> Callable[[Any, Any, _Context], Awaitable[_R]]:
    """Refused requests and domain errors become their status codes; an outage UNAVAILABLE; anything else
    INTERNAL with a request id and no internals in the message."""

    @functools.wraps(method)
    async def wrapper(self: AmeServicer, request: Any, context: _Context) -> _R:
        try:
            if isinstance(request, Refused):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _details(request.message))
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc, self.retry_after_seconds, method.__name__)
            raise  # unreachable: abort raises

    return wrapper


def _caller_trace(context: _Context) -> AbstractContextManager[None]:
    """The caller's trace context (traceparent in the call's metadata), made current for the handler."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return telemetry.extracted(metadata)


class AmeServicer(ame_service_pb2_grpc.AmeServiceServicer):
    def __init__(self, runs: RunService, follower: LogFollower, *, retry_after_seconds: int = 2) -> None:
        self._runs = runs
        self._follower = follower
        self.retry_after_seconds = retry_after_seconds

    @_unary
    async def SubmitRun(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.SubmitRunRequest, context: _Context
    ) -> ame_service_pb2.SubmitRunResponse:
        submission = convert.submit_request(request)
        with _caller_trace(context):
            run = await self._runs.submit(
                submission.spec,
                trigger=submission.trigger,
                parent_run_id=submission.parent_run_id,
                idempotency_key=submission.idempotency_key,
            )
        return ame_service_pb2.SubmitRunResponse(run=convert.run_to_pb(run))

    @_unary
    async def GetRun(  # noqa: N802
        self, request: ame_service_pb2.GetRunRequest, context: _Context
    ) -> ame_service_pb2.GetRunResponse:
        run = await self._runs.get(convert.run_id_request(request.run_id))
        return ame_service_pb2.GetRunResponse(run=convert.run_to_pb(run))

    @_unary
    async def ListRuns(  # noqa: N802
        self, request: ame_service_pb2.ListRunsRequest, context: _Context
    ) -> ame_service_pb2.ListRunsResponse:
        query = convert.list_request(request)
        page = await self._runs.list(
            project=query.project,
            task=query.task,
            states=query.states,
            page_size=query.page_size,
            page_token=query.page_token,
        )
        return ame_service_pb2.ListRunsResponse(
            runs=[convert.run_to_pb(r) for r in page.runs], next_page_token=page.next_page_token
        )

    @_unary
    async def CancelRun(  # noqa: N802
        self, request: ame_service_pb2.CancelRunRequest, context: _Context
    ) -> ame_service_pb2.CancelRunResponse:
        run_id, reason = convert.cancel_request(request)
        run = await self._runs.cancel(run_id, reason)
        return ame_service_pb2.CancelRunResponse(run=convert.run_to_pb(run))

    async def FollowLogs(  # noqa: N802
        self, request: ame_service_pb2.FollowLogsRequest, context: _Context
    ) -> AsyncIterator[ame_service_pb2.FollowLogsResponse]:
        try:
            if isinstance(request, Refused):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _details(request.message))
            run_id, from_seq = convert.follow_request(request)
            await self._runs.get(run_id)
            async for event in self._follower.follow(run_id, from_seq):
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
            await _abort(context, exc, self.retry_after_seconds, "FollowLogs")
