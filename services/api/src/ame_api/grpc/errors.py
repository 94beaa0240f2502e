"""gRPC status codes for AmeService's errors, one mapping for every method.

A refused request or a domain error becomes its status code; an outage of a dependency UNAVAILABLE with a
`retry-after` trailer; anything else INTERNAL with a request id (logged once, with the traceback) and no
internals in the message.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from grpc.aio import ServicerContext

from ame_api import convert
from ame_api.auth import Forbidden
from ame_api.grpc.decoding import Refused
from ame_api.projects import MissingBlobs
from ame_api.runs import Conflict, InvalidRequest, NotFound
from ame_platform.faults import is_transient

log = logging.getLogger(__name__)

Context = ServicerContext[object, object]
_R = TypeVar("_R")

# Kept short: a status message travels in a trailer, whose size peers may limit (grpc.max_metadata_size).
_MAX_DETAILS = 2000


class _Servicer(Protocol):
    retry_after_seconds: int


def details(text: str) -> str:
    return text if len(text) <= _MAX_DETAILS else f"{text[: _MAX_DETAILS - 20]}… ({len(text)} characters)"


def _status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status a domain error maps to; None for an unexpected error."""
    if isinstance(exc, Forbidden):
        return grpc.StatusCode.PERMISSION_DENIED, details(str(exc))
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, details(str(exc.args[0] if exc.args else exc))
    if isinstance(exc, convert.DecodeError | InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, details(str(exc))
    if isinstance(exc, MissingBlobs):  # before Conflict, of which it is one
        return grpc.StatusCode.FAILED_PRECONDITION, details(str(exc))
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS, details(str(exc))
    return None


async def abort_for(context: Context, exc: Exception, retry_after_seconds: int, method: str) -> None:
    """Abort the call with the status `exc` maps to (always raises)."""
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


def unary(
    method: Callable[[Any, Any, Context], Awaitable[_R]],
) -> Callable[[Any, Any, Context], Awaitable[_R]]:
    """For a method answering one message: a refused request and every error mapped as `abort_for` does."""

    @functools.wraps(method)
    async def wrapper(self: _Servicer, request: Any, context: Context) -> _R:
        try:
            if isinstance(request, Refused):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message))
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(context, exc, self.retry_after_seconds, method.__name__)
            raise  # unreachable: abort raises

    return wrapper
