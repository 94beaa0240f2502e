"""Errors as clients see them: a 4xx with a message for anything they can fix, a 503 with Retry-After while
a dependency is away, and for anything else a 500 that names a request id and keeps the connection usable.

Every response carries `X-Request-Id` (the client's own, when it sent a sane one). An unexpected error is
logged once, with that id, and the client gets the id without any internals.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ame.domain import errors
from ame_api.repositories.runs import NotFound
from ame_api.rest.projects import reads_own_body
from ame_api.runs import Conflict, InvalidRequest
from ame_platform.faults import is_transient

log = logging.getLogger(__name__)

# A run spec is at most a few hundred KiB; anything far larger is refused before it is read into memory.
MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


class ErrorGuard:
    """Outermost ASGI layer: assigns the request id and turns any exception that escaped the handlers into
    a response, so the server never has to drop the connection for it.

    Starlette's own last-resort handler answers and then re-raises, after which uvicorn closes a keep-alive
    connection without saying so; the client's next request on it then fails.
    """

    def __init__(self, app: ASGIApp, retry_after_seconds: int = 2) -> None:
        self.app = app
        self.retry_after_seconds = retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = finished = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            where = f"{scope.get('method', '')} {scope.get('path', '')}"
            if started:
                # A stream was under way: its status is sent, so the best left is to end the body cleanly.
                log.error("error while streaming %s (request id %s)", where, rid, exc_info=exc)
                if not finished:
                    try:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    except Exception:  # the connection is gone already
                        log.debug("could not end the response of request %s", rid, exc_info=True)
                return
            response = self._response_for(exc, where, rid)
            await response(scope, receive, send_with_id)

    def _response_for(self, exc: Exception, where: str, rid: str) -> JSONResponse:
        if is_transient(exc):
            log.warning("%s: a dependency is unavailable (request id %s): %r", where, rid, exc)
            return JSONResponse(
                status_code=503,
                content={"error": "service temporarily unavailable; retry later", "request_id": rid},
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        log.error("unhandled error on %s (request id %s)", where, rid, exc_info=exc)
        return JSONResponse(
            status_code=500,
            content={"error": f"internal error; see the api service's log, request id {rid}", "request_id": rid},
        )


class _Wrap:
    """An ASGI layer made by a factory (one that needs more than the app to be built)."""

    def __init__(self, app: ASGIApp, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self._inner = wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._inner(scope, receive, send)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CLIENT_REQUEST_ID.fullmatch(text) else None
    return None


def install(
    app: FastAPI, *, retry_after_seconds: int = 2, authenticate: Callable[[ASGIApp], ASGIApp] | None = None
) -> None:
    """The body limit, then (outside it) `authenticate`, then (outermost) the error guard."""

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if reads_own_body(request.method, request.url.path) or request.url.path.startswith(
            ("/v1/hooks/", "/v1/source-hooks/")
        ):
            # Project pushes stream blobs and bound their own bodies; webhooks have their own limit (a setting).
            return await call_next(request)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return JSONResponse(status_code=413, content={"error": f"request body over {MAX_BODY_BYTES} bytes"})
        if declared is None and request.method in ("POST", "PUT", "PATCH"):
            body = bytearray()
            async for part in request.stream():
                body += part
                if len(body) > MAX_BODY_BYTES:
                    return JSONResponse(status_code=413, content={"error": f"request body over {MAX_BODY_BYTES} bytes"})
            request._body = bytes(body)  # starlette reads the cached body from here
        return await call_next(request)

    if authenticate is not None:
        app.add_middleware(_Wrap, wrap=authenticate)
    # Added last, so it wraps every other middleware and handler.
    app.add_middleware(ErrorGuard, retry_after_seconds=retry_after_seconds)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = errors.problems(exc.errors())
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(status_code=422, content={"error": message, "problems": problems})

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": str(exc.args[0] if exc.args else exc)})

    @app.exception_handler(InvalidRequest)
    async def _invalid_request(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(exc)})

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"error": str(exc)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)
