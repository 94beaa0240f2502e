"""/v1/runs/{run_id}/artifacts: list a remote run's artifacts and download one (streamed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ame.domain.artifacts import Artifact
from ame.domain.limits import RunIdText
from ame_api.artifacts import ArtifactService
from ame_api.rest.auth import CurrentPrincipal


class ArtifactList(BaseModel):
    artifacts: list[Artifact]


def router(artifacts: ArtifactService) -> APIRouter:
    api = APIRouter(prefix="/v1/runs", tags=["artifacts"])

    @api.get(
        "/{run_id}/artifacts",
        response_model=ArtifactList,
        summary="A run's artifacts, every attempt's, by path then attempt",
        description="404 for an unknown run.",
    )
    async def list_artifacts(principal: CurrentPrincipal, run_id: Annotated[RunIdText, Path()]) -> ArtifactList:
        return ArtifactList(artifacts=await artifacts.list_artifacts(principal, "", run_id))

    @api.get(
        "/{run_id}/artifacts/{path:path}",
        summary="Download one artifact's bytes (the latest attempt's unless ?attempt=N)",
        description="404 for an unknown run or path; 422 for a path that is not plain and relative ('..', '/x').",
        response_class=StreamingResponse,
    )
    async def download_artifact(
        principal: CurrentPrincipal,
        run_id: Annotated[RunIdText, Path()],
        path: Annotated[str, Path(max_length=4096)],
        attempt: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    ) -> StreamingResponse:
        artifact, chunks = await artifacts.open_artifact(principal, "", run_id, path, attempt)
        headers = {
            "Content-Length": str(artifact.size),
            "X-Ame-Sha256": artifact.sha256,
            "X-Ame-Attempt": str(artifact.attempt),
        }
        return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)

    return api
