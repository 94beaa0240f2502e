"""/v1/runs: submit, read, list, cancel, and follow output as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ame.domain import LogEnd, Run, RunSpec, RunState
from ame.domain.limits import (
    IdempotencyKey,
    LogSeq,
    NameFilter,
    PageSize,
    PageToken,
    Reason,
    RunIdPrefix,
    RunIdText,
)
from ame_api.convert import LineBatch
from ame_api.follow import LogFollower
from ame_api.rest.auth import CurrentPrincipal
from ame_api.runs import RunService


class RunList(BaseModel):
    runs: list[Run]
    next_page_token: str = Field("", description="Pass as page_token for the next page; empty on the last.")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field("", description="Why; shown with the run. Empty for a standard reason.")


# Path and query parameters, with the limits the gRPC edge applies too.
RunIdPath = Annotated[RunIdText, Path(description="The run's id.")]


def router(runs: RunService, follower: LogFollower) -> APIRouter:
    api = APIRouter(prefix="/v1/runs", tags=["runs"])

    @api.post("", status_code=201, response_model=Run, summary="Submit a run; it is returned queued")
    async def submit_run(
        principal: CurrentPrincipal,
        spec: RunSpec,
        idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
    ) -> Run:
        return await runs.submit(principal, spec, idempotency_key=idempotency_key)

    @api.get("", response_model=RunList, summary="List runs, newest first")
    async def list_runs(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query()] = None,
        task: Annotated[NameFilter | None, Query()] = None,
        state: Annotated[list[RunState] | None, Query()] = None,
        page_size: Annotated[PageSize | None, Query()] = None,
        page_token: Annotated[PageToken | None, Query()] = None,
        id_prefix: Annotated[
            RunIdPrefix | None,
            Query(description="Only runs whose id starts with this: at least 4 hex digits, hyphens ignored."),
        ] = None,
        parent: Annotated[
            RunIdText | None, Query(description="Only the child runs (pipeline steps) of this run.")
        ] = None,
    ) -> RunList:
        page = await runs.list(
            principal,
            project=project,
            task=task,
            states=state,
            page_size=page_size,
            page_token=page_token,
            id_prefix=id_prefix,
            parent_run_id=parent,
        )
        return RunList(runs=page.runs, next_page_token=page.next_page_token)

    @api.get("/{run_id}", response_model=Run, summary="Get one run")
    async def get_run(principal: CurrentPrincipal, run_id: RunIdPath) -> Run:
        return await runs.get(principal, run_id)

    @api.post("/{run_id}/cancel", response_model=Run, summary="Cancel a run that has not ended")
    async def cancel_run(principal: CurrentPrincipal, run_id: RunIdPath, body: CancelBody | None = None) -> Run:
        return await runs.cancel(principal, run_id, body.reason if body else "")

    @api.get(
        "/{run_id}/logs",
        summary="Follow a run's output as server-sent events",
        description='Events `lines` (JSON: {"lines": [{seq, stream, text, at}, ...]}: consecutive lines, as many '
        "as are ready, with the last one's seq as the event id) from `from_seq` on, history first, then one `end` "
        "(JSON: state, exit_code, reason, total_lines) when the run has ended; the stream then closes.",
        response_class=StreamingResponse,
    )
    async def follow_logs(
        request: Request,
        principal: CurrentPrincipal,
        run_id: RunIdPath,
        from_seq: Annotated[LogSeq, Query()] = 0,
        token: Annotated[
            str | None,
            Query(
                max_length=200,
                description="For a browser's EventSource, which cannot send headers: a token from "
                "POST /v1/runs/{run_id}/log-token (Authorization: Bearer is used when both are given).",
            ),
        ] = None,
    ) -> StreamingResponse:
        await runs.get(principal, run_id)  # 404 before the stream starts

        async def events() -> AsyncIterator[str]:
            async for event in follower.follow(principal, run_id, from_seq):
                if await request.is_disconnected():
                    return
                yield _sse(event)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return api


def _sse(event: LineBatch | LogEnd) -> str:
    # One event per batch: a chatty run's lines cost one event, one write and one disconnect check per batch.
    if isinstance(event, LineBatch):
        return f'event: lines\nid: {event.last_seq}\ndata: {{"lines":{event.to_json()}}}\n\n'
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"event: end\ndata: {data}\n\n"
