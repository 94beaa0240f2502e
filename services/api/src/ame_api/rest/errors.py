"""Errors as clients see them: a 4xx with a message for anything they can fix, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ame.domain import errors
from ame_api.repositories.runs import NotFound
from ame_api.rest.projects import STREAMED_PREFIX
from ame_api.runs import Conflict, InvalidRequest

log = logging.getLogger(__name__)

# A run spec is at most a few hundred KiB; anything far larger is refused before it is read into memory.
MAX_BODY_BYTES = 1024 * 1024


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith(STREAMED_PREFIX):
            return await call_next(request)  # project pushes stream blobs and bound their own bodies
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
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal error; see the api service's log"})
