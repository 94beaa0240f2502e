"""/v1/datasets: the organisation's data sets (status, size, version, producing run); produce one again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.data_sets import DataSetSummary
from ame.domain.limits import NameFilter
from ame.domain.projects import ManifestEntry
from ame_api.data_sets import DataSetService
from ame_api.rest.auth import CurrentPrincipal

_Name = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
_Digest = Annotated[str, Path(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


class PrepareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition_hash: str = Field("", max_length=64)
    produce: bool = False


class DataSetFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_set: DataSetSummary
    files: list[ManifestEntry]


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
        return DataSetList(data_sets=await data_sets.list_current(principal, project))

    @api.post(
        "/{project}/{name}/prepare",
        response_model=DataSetFiles,
        summary="The data set as a definition of it is produced, produced first if it never was",
        description="`definition_hash` (empty: the project's latest pushed version's definition) picks the "
        "definition; with `produce` its production starts if none has. `files` are the version's, once ready.",
    )
    async def prepare(
        principal: CurrentPrincipal, project: _Name, name: _Name, request: PrepareRequest
    ) -> DataSetFiles:
        summary, files = await data_sets.get(principal, project, name, request.definition_hash, produce=request.produce)
        return DataSetFiles(data_set=summary, files=files or [])

    @api.get(
        "/{project}/{name}/versions/{version_id}/blobs/{sha256}",
        response_class=StreamingResponse,
        summary="Download one file of a ready data set version",
    )
    async def download(
        principal: CurrentPrincipal, project: _Name, name: _Name, version_id: _Digest, sha256: _Digest
    ) -> StreamingResponse:
        chunks = await data_sets.read_blob(principal, project, name, version_id, sha256)
        return StreamingResponse(chunks, media_type="application/octet-stream")

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
