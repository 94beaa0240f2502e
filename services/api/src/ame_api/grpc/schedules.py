"""The schedule methods of AmeService: activate a trigger version, list, pause, resume, trigger now."""

from __future__ import annotations

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary
from ame_api.organisations import resolve
from ame_api.projects import ProjectService
from ame_api.schedules import ScheduleService


class ScheduleMethods:
    """Mixed into AmeServicer; `_projects` and `_schedules` are set by its constructor."""

    _projects: ProjectService
    _schedules: ScheduleService
    retry_after_seconds: int

    @unary
    async def ActivateProjectVersion(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.ActivateProjectVersionRequest, context: Context
    ) -> ame_service_pb2.ActivateProjectVersionResponse:
        organisation, project, version_id = convert.activate_request(request)
        activation = await self._projects.activate(caller(), organisation, project, version_id)
        return convert.activation_to_pb(activation)

    @unary
    async def ListSchedules(  # noqa: N802
        self, request: ame_service_pb2.ListSchedulesRequest, context: Context
    ) -> ame_service_pb2.ListSchedulesResponse:
        found = await self._schedules.list(
            caller(), organisation=request.organisation[:200] or None, project=request.project[:200] or None
        )
        return ame_service_pb2.ListSchedulesResponse(schedules=[convert.schedule_to_pb(s) for s in found])

    @unary
    async def PauseSchedule(  # noqa: N802
        self, request: ame_service_pb2.ScheduleRequest, context: Context
    ) -> ame_service_pb2.ScheduleResponse:
        query = convert.schedule_request(request)
        resolve(caller(), query.organisation)
        summary = await self._schedules.set_paused(caller(), query.name, paused=True, project=query.project)
        return ame_service_pb2.ScheduleResponse(schedule=convert.schedule_to_pb(summary))

    @unary
    async def ResumeSchedule(  # noqa: N802
        self, request: ame_service_pb2.ScheduleRequest, context: Context
    ) -> ame_service_pb2.ScheduleResponse:
        query = convert.schedule_request(request)
        resolve(caller(), query.organisation)
        summary = await self._schedules.set_paused(caller(), query.name, paused=False, project=query.project)
        return ame_service_pb2.ScheduleResponse(schedule=convert.schedule_to_pb(summary))

    @unary
    async def TriggerSchedule(  # noqa: N802
        self, request: ame_service_pb2.ScheduleRequest, context: Context
    ) -> ame_service_pb2.TriggerScheduleResponse:
        query = convert.schedule_request(request)
        resolve(caller(), query.organisation)
        run = await self._schedules.trigger(caller(), query.name, project=query.project)
        return ame_service_pb2.TriggerScheduleResponse(run=convert.run_to_pb(run))
