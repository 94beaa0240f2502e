"""/v1/datasets: the organisation's data sets (status, size, version, producing run); produce one again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict

from ame.domain.data_sets import DataSetSummary
from ame.domain.limits import NameFilter
from ame_api.data_sets import DataSetService
from ame_api.rest.auth import CurrentPrincipal

_Name = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class DataSetList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_sets: list[DataSetSummary]


def router(data_sets: DataSetService) -> APIRouter:
    api = APIRouter(prefix="/v1/datasets", tags=["data sets"])

    @api.get(
        "",
        response_model=DataSetList,
        summary="List data sets with their status, size, version and producing run",
        description="The newest production of each data set, by project then name.",
    )
    async def list_data_sets(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query(description="Only this project's data sets.")] = None,
    ) -> DataSetList:
        return DataSetList(data_sets=await data_sets.list(principal, project))

    @api.post(
        "/{project}/{name}/refresh",
        response_model=DataSetSummary,
        status_code=202,
        summary="Produce the data set again",
        description="Starts a new production of the data set as the project's latest version declares it; "
        "consumers submitted from now on use (and wait for) the new version.",
    )
    async def refresh(principal: CurrentPrincipal, project: _Name, name: _Name) -> DataSetSummary:
        return await data_sets.refresh(principal, project, name)

    return api
