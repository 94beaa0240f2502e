"""The data set methods of AmeService: list, refresh."""

from __future__ import annotations

import re

from ame.contracts.api.v1 import ame_service_pb2
from ame.domain.projects import PROJECT_NAME
from ame_api import convert
from ame_api.data_sets import DataSetService
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary
from ame_api.runs import InvalidRequest, RunService

_NAME = re.compile(PROJECT_NAME)


class DataSetMethods:
    """Mixed into AmeServicer; `_runs` is set by its constructor (its data set service serves these)."""

    _runs: RunService

    def _data_set_service(self) -> DataSetService:
        if self._runs.data_sets is None:
            raise InvalidRequest("this server does not serve data sets")
        return self._runs.data_sets

    @unary
    async def ListDataSets(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.ListDataSetsRequest, context: Context
    ) -> ame_service_pb2.ListDataSetsResponse:
        project = request.project[:200] or None
        found = await self._data_set_service().list(caller(), project)
        return ame_service_pb2.ListDataSetsResponse(data_sets=[convert.data_set_to_pb(d) for d in found])

    @unary
    async def RefreshDataSet(  # noqa: N802
        self, request: ame_service_pb2.RefreshDataSetRequest, context: Context
    ) -> ame_service_pb2.RefreshDataSetResponse:
        for what, value in (("project", request.project), ("name", request.name)):
            if len(value) > 200 or not _NAME.match(value):
                raise InvalidRequest(f"{what} {value[:80]!r} is not a valid name")
        summary = await self._data_set_service().refresh(caller(), request.project, request.name)
        return ame_service_pb2.RefreshDataSetResponse(data_set=convert.data_set_to_pb(summary))
