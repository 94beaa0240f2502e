"""The git project source methods of AmeService: add, list, remove, sync now (push hooks arrive over REST)."""

from __future__ import annotations

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary
from ame_api.runs import InvalidRequest
from ame_api.sources.service import SourceService


class SourceMethods:
    """Mixed into AmeServicer; `_sources` is set by its constructor (None on a server without sources)."""

    _sources: SourceService | None
    retry_after_seconds: int

    def _source_service(self) -> SourceService:
        if self._sources is None:
            raise InvalidRequest("this server tracks no git sources")
        return self._sources

    @unary
    async def AddProjectSource(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.AddProjectSourceRequest, context: Context
    ) -> ame_service_pb2.ProjectSourceResponse:
        source = await self._source_service().add(
            caller(),
            request.url,
            branch=request.branch,
            path=request.path,
            interval=request.interval or None,
            secret_name=request.secret,
            hook_secret_name=request.hook_secret,
            organisation=request.organisation or None,
        )
        return ame_service_pb2.ProjectSourceResponse(source=convert.project_source_to_pb(source))

    @unary
    async def ListProjectSources(  # noqa: N802
        self, request: ame_service_pb2.ListProjectSourcesRequest, context: Context
    ) -> ame_service_pb2.ListProjectSourcesResponse:
        found = await self._source_service().list(caller(), organisation=request.organisation or None)
        return ame_service_pb2.ListProjectSourcesResponse(sources=[convert.project_source_to_pb(s) for s in found])

    @unary
    async def RemoveProjectSource(  # noqa: N802
        self, request: ame_service_pb2.ProjectSourceRequest, context: Context
    ) -> ame_service_pb2.ProjectSourceResponse:
        source = await self._source_service().remove(
            caller(), request.source[:2000], organisation=request.organisation or None
        )
        return ame_service_pb2.ProjectSourceResponse(source=convert.project_source_to_pb(source))

    @unary
    async def SyncProjectSource(  # noqa: N802
        self, request: ame_service_pb2.ProjectSourceRequest, context: Context
    ) -> ame_service_pb2.ProjectSourceResponse:
        source = await self._source_service().sync(
            caller(), request.source[:2000], organisation=request.organisation or None, wait=request.wait
        )
        return ame_service_pb2.ProjectSourceResponse(source=convert.project_source_to_pb(source))
