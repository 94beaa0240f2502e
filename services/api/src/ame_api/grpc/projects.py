"""The project-version methods of AmeService: push (missing blobs, upload, commit), list and fetch."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc.aio import ServicerContext

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.projects import InvalidSpec, MissingBlobs, ProjectService, TooLarge
from ame_api.repositories.runs import NotFound
from ame_api.runs import Conflict, InvalidRequest

log = logging.getLogger(__name__)

_Context = ServicerContext[object, object]
_R = TypeVar("_R")


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc.args[0] if exc.args else exc)
    if isinstance(exc, InvalidSpec | TooLarge | InvalidRequest | convert.DecodeError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, MissingBlobs):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS, str(exc)
    log.exception("unhandled error in a gRPC project call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error; see the api service's log"


def _unary(
    method: Callable[[Any, Any, _Context], Awaitable[_R]],
) -> Callable[[Any, Any, _Context], Awaitable[_R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: _Context) -> _R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await context.abort(*_status(exc))
            raise  # unreachable: abort raises

    return wrapper


class ProjectMethods:
    """Mixed into AmeServicer; `_projects` is set by its constructor."""

    _projects: ProjectService

    @_unary
    async def FindMissingBlobs(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.FindMissingBlobsRequest, context: _Context
    ) -> ame_service_pb2.FindMissingBlobsResponse:
        files = convert.manifest_from_pb(request.files)
        missing = await self._projects.find_missing(request.organisation, request.project, files)
        return ame_service_pb2.FindMissingBlobsResponse(missing_sha256=missing)

    @_unary
    async def UploadBlob(  # noqa: N802
        self, request_iterator: AsyncIterator[ame_service_pb2.UploadBlobRequest], context: _Context
    ) -> ame_service_pb2.UploadBlobResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidRequest("the first message of an upload must be its header")
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for part in request_iterator:
                if part.HasField("header"):
                    raise InvalidRequest("an upload has one header, at its start")
                yield part.chunk

        created = await self._projects.upload_blob(
            header.organisation, header.project, header.sha256, header.size, chunks()
        )
        return ame_service_pb2.UploadBlobResponse(sha256=header.sha256, size=header.size, created=created)

    @_unary
    async def CommitProjectVersion(  # noqa: N802
        self, request: ame_service_pb2.CommitProjectVersionRequest, context: _Context
    ) -> ame_service_pb2.CommitProjectVersionResponse:
        rows = [(f.path, f.mode, f.sha256, f.size) for f in request.files]
        existing = await self._projects.committed(request.organisation, request.project, rows)
        if existing is not None:
            return ame_service_pb2.CommitProjectVersionResponse(version=convert.version_to_pb(existing), created=False)
        files = convert.manifest_from_pb(request.files)
        version, created = await self._projects.commit(request.organisation, request.project, files)
        return ame_service_pb2.CommitProjectVersionResponse(version=convert.version_to_pb(version), created=created)

    @_unary
    async def ListProjectVersions(  # noqa: N802
        self, request: ame_service_pb2.ListProjectVersionsRequest, context: _Context
    ) -> ame_service_pb2.ListProjectVersionsResponse:
        if request.page_size < 0 or request.page_size > 1000:
            raise InvalidRequest("page_size must be between 0 and 1000")
        page = await self._projects.list_versions(
            request.organisation,
            request.project,
            page_size=request.page_size or None,
            page_token=request.page_token or None,
        )
        return ame_service_pb2.ListProjectVersionsResponse(
            versions=[convert.version_to_pb(v) for v in page.versions], next_page_token=page.next_page_token
        )

    @_unary
    async def GetProjectVersion(  # noqa: N802
        self, request: ame_service_pb2.GetProjectVersionRequest, context: _Context
    ) -> ame_service_pb2.GetProjectVersionResponse:
        version, files = await self._projects.get_version(request.organisation, request.project, request.version_id)
        return ame_service_pb2.GetProjectVersionResponse(
            version=convert.version_to_pb(version), files=convert.manifest_to_pb(files)
        )

    async def DownloadBlob(  # noqa: N802
        self, request: ame_service_pb2.DownloadBlobRequest, context: _Context
    ) -> AsyncIterator[ame_service_pb2.DownloadBlobResponse]:
        try:
            chunks = await self._projects.read_blob(request.organisation, request.project, request.sha256)
            async for chunk in chunks:
                yield ame_service_pb2.DownloadBlobResponse(chunk=chunk)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await context.abort(*_status(exc))
