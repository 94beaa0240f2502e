"""The data set methods of AmeService: list, refresh, get (with the version's files), download a file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.data_sets import DataSetService
from ame_api.grpc.auth import caller
from ame_api.grpc.decoding import Refused
from ame_api.grpc.errors import Context, abort_for, unary
from ame_api.runs import InvalidRequest, RunService


class DataSetMethods:
    """Mixed into AmeServicer; `_runs` is set by its constructor (its data set service serves these)."""

    _runs: RunService
    retry_after_seconds: int

    def _data_set_service(self) -> DataSetService:
        if self._runs.data_sets is None:
            raise InvalidRequest("this server does not serve data sets")
        return self._runs.data_sets

    @unary
    async def ListDataSets(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.ListDataSetsRequest, context: Context
    ) -> ame_service_pb2.ListDataSetsResponse:
        project = request.project[:200] or None
        found = await self._data_set_service().list_current(caller(), project)
        return ame_service_pb2.ListDataSetsResponse(data_sets=[convert.data_set_to_pb(d) for d in found])

    @unary
    async def RefreshDataSet(  # noqa: N802
        self, request: ame_service_pb2.RefreshDataSetRequest, context: Context
    ) -> ame_service_pb2.RefreshDataSetResponse:
        summary = await self._data_set_service().refresh(caller(), request.project, request.name)
        return ame_service_pb2.RefreshDataSetResponse(data_set=convert.data_set_to_pb(summary))

    @unary
    async def GetDataSet(  # noqa: N802
        self, request: ame_service_pb2.GetDataSetRequest, context: Context
    ) -> ame_service_pb2.GetDataSetResponse:
        summary, files = await self._data_set_service().get(
            caller(), request.project, request.name, request.definition_hash[:64], produce=request.produce
        )
        return ame_service_pb2.GetDataSetResponse(
            data_set=convert.data_set_to_pb(summary), files=convert.manifest_to_pb(files or [])
        )

    async def DownloadDataSetBlob(  # noqa: N802
        self, request: ame_service_pb2.DownloadDataSetBlobRequest, context: Context
    ) -> AsyncIterator[ame_service_pb2.DownloadBlobResponse]:
        try:
            if isinstance(request, Refused):
                raise InvalidRequest(request.message)
            chunks = await self._data_set_service().read_blob(
                caller(), request.project, request.name, request.version_id, request.sha256
            )
            async for chunk in chunks:
                yield ame_service_pb2.DownloadBlobResponse(chunk=chunk)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(context, exc, self.retry_after_seconds, "DownloadDataSetBlob")
