"""/v1/loops: the PEACH task loops of the caller's organisation (seed 002's task information view)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ame.domain.limits import NameFilter
from ame.domain.loops import LoopsInfo
from ame_api.peach_loops import LoopService
from ame_api.rest.auth import CurrentPrincipal


def router(loops: LoopService) -> APIRouter:
    api = APIRouter(prefix="/v1/loops", tags=["loops"])

    @api.get(
        "",
        response_model=LoopsInfo,
        summary="The organisation's PEACH tasks and their executions",
        description="Each task of the organisation's loops (its own and the shared metadata loop): state in the "
        "cycle under way (PENDING, RUNNING, FINISHED), last status, start and duration, success and failure "
        "counts; and the executions, oldest first (version, start, status, duration, run id for the logs).",
    )
    async def info(
        principal: CurrentPrincipal,
        organisation: Annotated[
            NameFilter | None, Query(description="The organisation (the token's own; another is 404).")
        ] = None,
        task: Annotated[NameFilter | None, Query(description="Only this task's executions.")] = None,
        limit: Annotated[int, Query(ge=1, le=10000, description="The most recent executions returned.")] = 1000,
    ) -> LoopsInfo:
        return await loops.info(principal, organisation=organisation, task=task, limit=limit)

    return api
