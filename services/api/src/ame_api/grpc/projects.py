"""The project-version methods of AmeService: push (missing blobs, upload, commit), list and fetch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.decoding import Refused
from ame_api.grpc.errors import Context, abort_for, unary
from ame_api.projects import ProjectService
from ame_api.runs import InvalidRequest

log = logging.getLogger(__name__)


class ProjectMethods:
    """Mixed into AmeServicer; `_projects` is set by its constructor."""

    _projects: ProjectService
    retry_after_seconds: int

    @unary
    async def FindMissingBlobs(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.FindMissingBlobsRequest, context: Context
    ) -> ame_service_pb2.FindMissingBlobsResponse:
        files = convert.manifest_from_pb(request.files)
        missing = await self._projects.find_missing(caller(), request.organisation, request.project, files)
        return ame_service_pb2.FindMissingBlobsResponse(missing_sha256=missing)

    @unary
    async def UploadBlob(  # noqa: N802
        self, request_iterator: AsyncIterator[ame_service_pb2.UploadBlobRequest], context: Context
    ) -> ame_service_pb2.UploadBlobResponse:
        first = await anext(aiter(request_iterator), None)
        if isinstance(first, Refused):
            raise InvalidRequest(first.message)
        if first is None or not first.HasField("header"):
            raise InvalidRequest("the first message of an upload must be its header")
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for part in request_iterator:
                if isinstance(part, Refused):
                    raise InvalidRequest(part.message)
                if part.HasField("header"):
                    raise InvalidRequest("an upload has one header, at its start")
                yield part.chunk

        created = await self._projects.upload_blob(
            caller(), header.organisation, header.project, header.sha256, header.size, chunks()
        )
        return ame_service_pb2.UploadBlobResponse(sha256=header.sha256, size=header.size, created=created)

    @unary
    async def CommitProjectVersion(  # noqa: N802
        self, request: ame_service_pb2.CommitProjectVersionRequest, context: Context
    ) -> ame_service_pb2.CommitProjectVersionResponse:
        rows = [(f.path, f.mode, f.sha256, f.size) for f in request.files]
        existing = await self._projects.committed(caller(), request.organisation, request.project, rows)
        if existing is not None:
            return ame_service_pb2.CommitProjectVersionResponse(version=convert.version_to_pb(existing), created=False)
        files = convert.manifest_from_pb(request.files)
        version, created = await self._projects.commit(caller(), request.organisation, request.project, files)
        return ame_service_pb2.CommitProjectVersionResponse(version=convert.version_to_pb(version), created=created)

    @unary
    async def ListProjectVersions(  # noqa: N802
        self, request: ame_service_pb2.ListProjectVersionsRequest, context: Context
    ) -> ame_service_pb2.ListProjectVersionsResponse:
        if request.page_size < 0 or request.page_size > 1000:
            raise InvalidRequest("page_size must be between 0 and 1000")
        page = await self._projects.list_versions(
            caller(),
            request.organisation,
            request.project,
            page_size=request.page_size or None,
            page_token=request.page_token or None,
        )
        return ame_service_pb2.ListProjectVersionsResponse(
            versions=[convert.version_to_pb(v) for v in page.versions], next_page_token=page.next_page_token
        )

    @unary
    async def GetProjectVersion(  # noqa: N802
        self, request: ame_service_pb2.GetProjectVersionRequest, context: Context
    ) -> ame_service_pb2.GetProjectVersionResponse:
        version, files = await self._projects.get_version(
            caller(), request.organisation, request.project, request.version_id
        )
        return ame_service_pb2.GetProjectVersionResponse(
            version=convert.version_to_pb(version), files=convert.manifest_to_pb(files)
        )

    async def DownloadBlob(  # noqa: N802
        self, request: ame_service_pb2.DownloadBlobRequest, context: Context
    ) -> AsyncIterator[ame_service_pb2.DownloadBlobResponse]:
        try:
            if isinstance(request, Refused):
                raise InvalidRequest(request.message)
            chunks = await self._projects.read_blob(caller(), request.organisation, request.project, request.sha256)
            async for chunk in chunks:
                yield ame_service_pb2.DownloadBlobResponse(chunk=chunk)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(context, exc, self.retry_after_seconds, "DownloadBlob")
