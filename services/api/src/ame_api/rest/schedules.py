"""/v1/schedules: the schedules of each project's trigger version; pause, resume, start one now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from ame.domain import Run
from ame.domain.limits import NameFilter
from ame.domain.schedules import ScheduleSummary
from ame_api.rest.auth import CurrentPrincipal
from ame_api.schedules import ScheduleService

_Name = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
_Project = Annotated[NameFilter | None, Query(description="The project, when several have a schedule of this name.")]


class ScheduleList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[ScheduleSummary]


def router(schedules: ScheduleService) -> APIRouter:
    api = APIRouter(prefix="/v1/schedules", tags=["schedules"])

    @api.get(
        "",
        response_model=ScheduleList,
        summary="List schedules with their next fire times and last run",
        description="The schedules of each project's trigger version (the version last pushed with "
        "`ame project push`), by project, then task. Next fire times are instants (UTC).",
    )
    async def list_schedules(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query(description="Only this project's schedules.")] = None,
    ) -> ScheduleList:
        return ScheduleList(schedules=await schedules.list(principal, project=project))

    @api.post("/{name}/pause", response_model=ScheduleSummary, summary="Pause a schedule: its slots do not fire")
    async def pause(principal: CurrentPrincipal, name: _Name, project: _Project = None) -> ScheduleSummary:
        return await schedules.set_paused(principal, name, paused=True, project=project)

    @api.post("/{name}/resume", response_model=ScheduleSummary, summary="Resume a paused schedule")
    async def resume(principal: CurrentPrincipal, name: _Name, project: _Project = None) -> ScheduleSummary:
        return await schedules.set_paused(principal, name, paused=False, project=project)

    @api.post(
        "/{name}/trigger", response_model=Run, status_code=201, summary="Start the schedule's run now, out of turn"
    )
    async def trigger(principal: CurrentPrincipal, name: _Name, project: _Project = None) -> Run:
        return await schedules.trigger(principal, name, project=project)

    return api
