"""The orchestration methods of AmeService (seed 004): upload, list, get, delete; tasks, kill, their runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.decoding import Refused
from ame_api.grpc.errors import Context, unary
from ame_api.orchestrations import OrchestrationService
from ame_api.runs import InvalidRequest

_MAX_TEXT = 1000


class OrchestrationMethods:
    """Mixed into AmeServicer; `_orchestrations` is set by its constructor."""

    _orchestrations: OrchestrationService
    retry_after_seconds: int

    @unary
    async def UploadOrchestration(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request_iterator: AsyncIterator[ame_service_pb2.UploadOrchestrationRequest], context: Context
    ) -> ame_service_pb2.OrchestrationResponse:
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

        found = await self._orchestrations.upload(
            caller(), name=header.name[:_MAX_TEXT], file_name=header.file_name[:_MAX_TEXT], chunks=chunks()
        )
        return ame_service_pb2.OrchestrationResponse(orchestration=convert.orchestration_to_pb(found))

    @unary
    async def ListOrchestrations(  # noqa: N802
        self, request: ame_service_pb2.ListOrchestrationsRequest, context: Context
    ) -> ame_service_pb2.ListOrchestrationsResponse:
        found = await self._orchestrations.list_all(caller())
        return ame_service_pb2.ListOrchestrationsResponse(
            orchestrations=[convert.orchestration_to_pb(o) for o in found]
        )

    @unary
    async def GetOrchestration(  # noqa: N802
        self, request: ame_service_pb2.OrchestrationRequest, context: Context
    ) -> ame_service_pb2.OrchestrationResponse:
        found = await self._orchestrations.get(caller(), request.name[:_MAX_TEXT])
        return ame_service_pb2.OrchestrationResponse(orchestration=convert.orchestration_to_pb(found))

    @unary
    async def DeleteOrchestration(  # noqa: N802
        self, request: ame_service_pb2.OrchestrationRequest, context: Context
    ) -> ame_service_pb2.DeleteOrchestrationResponse:
        await self._orchestrations.delete(caller(), request.name[:_MAX_TEXT])
        return ame_service_pb2.DeleteOrchestrationResponse()

    @unary
    async def StartOrchestrationTask(  # noqa: N802
        self, request: ame_service_pb2.StartOrchestrationTaskRequest, context: Context
    ) -> ame_service_pb2.OrchestrationTaskResponse:
        task = await self._orchestrations.start_task(
            caller(),
            request.orchestration[:_MAX_TEXT],
            name=request.name[:_MAX_TEXT],
            json_args=request.json_args,
            timeout_seconds=request.timeout_seconds or None,
            schedule=request.schedule[:_MAX_TEXT],
        )
        return ame_service_pb2.OrchestrationTaskResponse(task=convert.orchestration_task_to_pb(task))

    @unary
    async def ListOrchestrationTasks(  # noqa: N802
        self, request: ame_service_pb2.ListOrchestrationTasksRequest, context: Context
    ) -> ame_service_pb2.ListOrchestrationTasksResponse:
        found = await self._orchestrations.list_tasks(caller(), killed=request.killed)
        return ame_service_pb2.ListOrchestrationTasksResponse(
            tasks=[convert.orchestration_task_to_pb(t) for t in found]
        )

    @unary
    async def GetOrchestrationTask(  # noqa: N802
        self, request: ame_service_pb2.OrchestrationTaskRequest, context: Context
    ) -> ame_service_pb2.OrchestrationTaskResponse:
        task = await self._orchestrations.get_task(caller(), request.task_id[:_MAX_TEXT])
        return ame_service_pb2.OrchestrationTaskResponse(task=convert.orchestration_task_to_pb(task))

    @unary
    async def KillOrchestrationTask(  # noqa: N802
        self, request: ame_service_pb2.KillOrchestrationTaskRequest, context: Context
    ) -> ame_service_pb2.OrchestrationTaskResponse:
        task = await self._orchestrations.kill(caller(), request.task_id[:_MAX_TEXT], cancel=request.cancel)
        return ame_service_pb2.OrchestrationTaskResponse(task=convert.orchestration_task_to_pb(task))

    @unary
    async def ListOrchestrationTaskRuns(  # noqa: N802
        self, request: ame_service_pb2.ListOrchestrationTaskRunsRequest, context: Context
    ) -> ame_service_pb2.ListOrchestrationTaskRunsResponse:
        runs = await self._orchestrations.task_runs(
            caller(),
            request.task_id[:_MAX_TEXT],
            status=request.status[:_MAX_TEXT] or "all",
            limit=request.limit or None,
        )
        return ame_service_pb2.ListOrchestrationTaskRunsResponse(runs=[convert.task_run_to_pb(r) for r in runs])
