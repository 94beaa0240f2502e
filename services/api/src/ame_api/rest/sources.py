"""/v1/projectsrc: git project sources (`ame projectsrc ...`); /v1/source-hooks: their push webhooks (signed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.sources import ProjectSource
from ame_api.rest.auth import CurrentPrincipal
from ame_api.sources.service import SourceService
from ame_api.webhooks import REFUSED_BODY

_SourceId = Annotated[str, Path(min_length=1, max_length=64, description="The source's id.")]


class SourceAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="https://, http://, ssh:// or user@host:path (never a password).")
    branch: str = Field("", max_length=200, description="The branch to track; empty: the remote's default branch.")
    path: str = Field("", max_length=1000, description="The project's directory in the repository.")
    interval: str = Field("", max_length=40, description="How often to sync ('1m', '30s', seconds); empty: default.")
    secret: str = Field("", max_length=256, description="Secret store entry git authenticates with (token/SSH key).")
    hook_secret: str = Field("", max_length=256, description="Secret store entry that signs push webhooks.")


class SourceList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[ProjectSource]


def router(sources: SourceService) -> APIRouter:
    api = APIRouter(tags=["project sources"])

    @api.get("/v1/projectsrc", response_model=SourceList, summary="List git project sources with their status")
    async def list_sources(principal: CurrentPrincipal) -> SourceList:
        return SourceList(sources=await sources.list(principal))

    @api.post(
        "/v1/projectsrc",
        response_model=ProjectSource,
        status_code=201,
        summary="Track a git repository's branch as a project",
        description="At each sync (every interval, on `sync`, or on a push webhook) the branch head becomes a "
        "project version tagged with its short commit hash, if it holds ame.yml, and its schedules and webhooks "
        "go live. 409 for a source that exists already.",
    )
    async def add_source(principal: CurrentPrincipal, body: SourceAdd) -> ProjectSource:
        return await sources.add(
            principal,
            body.url,
            branch=body.branch,
            path=body.path,
            interval=body.interval or None,
            secret_name=body.secret,
            hook_secret_name=body.hook_secret,
        )

    @api.delete(
        "/v1/projectsrc/{source_id}",
        response_model=ProjectSource,
        summary="Stop tracking a source (its versions stay)",
    )
    async def remove_source(principal: CurrentPrincipal, source_id: _SourceId) -> ProjectSource:
        return await sources.remove(principal, source_id)

    @api.post(
        "/v1/projectsrc/{source_id}/sync",
        response_model=ProjectSource,
        summary="Sync a source now",
        description="With `wait` (default), answers once the sync has ended, with the source's state.",
    )
    async def sync_source(
        principal: CurrentPrincipal, source_id: _SourceId, wait: Annotated[bool, Query()] = True
    ) -> ProjectSource:
        return await sources.sync(principal, source_id, wait=wait)

    @api.post(
        "/v1/source-hooks/{org}/{source_id}",
        status_code=202,
        summary="Push webhook of a git source",
        description="A GitHub-style push delivery (`X-Hub-Signature-256: sha256=<hex>` over the body, with the "
        "source's hook secret; or AME's timestamped scheme) syncs the source at once. A push to another branch "
        "is acknowledged and ignored. 401 (always the same answer) for a delivery that cannot be authenticated.",
        responses={401: {"content": {"application/json": {"example": REFUSED_BODY}}}, 413: {}},
    )
    async def push_hook(org: str, source_id: str, request: Request) -> JSONResponse:
        limit = sources.max_hook_body_bytes
        too_large = JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return too_large
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return too_large
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = await sources.push_event(org, source_id, bytes(body), headers)
        return JSONResponse(answer.body, status_code=answer.status)

    return api
