"""/v1/projects/{project}: push a version (missing blobs, blob upload, commit), list versions, fetch them.

These routes read their own bodies: a manifest may be larger than the app-wide body limit, and a blob is
streamed to the object store without ever being held in memory. `reads_own_body` tells the body-limit
middleware which requests to leave alone (only those; every other route keeps the app-wide limit).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ame.domain.projects import ManifestEntry, ProjectVersion, VersionManifest
from ame.domain.schedules import Activation
from ame_api.projects import ProjectService
from ame_api.rest.auth import CurrentPrincipal
from ame_api.settings import ApiSettings
from ame_api.version_checks import InvalidSpec, TooLarge

# The requests that read (and bound) their own bodies: a manifest (missing blobs, commit) and a blob upload.
_OWN_BODY = re.compile(
    r"^(POST /v1/projects/[^/]+/(missing-blobs|versions)|PUT /v1/projects/[^/]+/blobs/[0-9a-f]{64})$"
)


def reads_own_body(method: str, path: str) -> bool:
    return _OWN_BODY.match(f"{method} {path}") is not None


_ProjectName = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
_Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[ManifestEntry] = Field(description="Every file of the version.")


class MissingBlobs(BaseModel):
    missing: list[str] = Field(description="sha256 of each blob to upload before the commit.")


class BlobStored(BaseModel):
    sha256: str
    size: int
    created: bool = Field(description="False when the server held the blob already.")


class VersionList(BaseModel):
    versions: list[ProjectVersion]
    next_page_token: str = Field("", description="Pass as page_token for the next page; empty on the last.")


def _manifest_limit(settings: ApiSettings) -> int:
    # About 120 bytes per entry in JSON; generous, so only a body far beyond the file limit is cut off.
    return max(1024 * 1024, settings.project_max_files * 1024)


async def _read_manifest(request: Request, limit: int) -> list[ManifestEntry]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge(f"the manifest is over the server's limit of {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise TooLarge(f"the manifest is over the server's limit of {limit} bytes")
    try:
        return Manifest.model_validate_json(bytes(body)).files
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def router(projects: ProjectService, settings: ApiSettings) -> APIRouter:
    api = APIRouter(prefix="/v1/projects", tags=["projects"])
    manifest_limit = _manifest_limit(settings)
    manifest_body = {
        "requestBody": {"content": {"application/json": {"schema": Manifest.model_json_schema()}}, "required": True}
    }

    @api.post(
        "/{project}/missing-blobs",
        response_model=MissingBlobs,
        summary="Which of a manifest's blobs the server lacks",
        openapi_extra=manifest_body,
    )
    async def missing_blobs(request: Request, principal: CurrentPrincipal, project: _ProjectName) -> MissingBlobs:
        files = await _read_manifest(request, manifest_limit)
        return MissingBlobs(missing=await projects.find_missing(principal, "", project, files))

    @api.put(
        "/{project}/blobs/{sha256}",
        status_code=201,
        response_model=BlobStored,
        summary="Upload one blob (the raw bytes); refused unless they match the sha256",
        description="Content-Length is required. 200 instead of 201 when the blob was held already.",
    )
    async def upload_blob(
        request: Request, response: Response, principal: CurrentPrincipal, project: _ProjectName, sha256: _Sha256
    ) -> BlobStored:
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return JSONResponse(  # type: ignore[return-value]
                status_code=411, content={"error": "Content-Length is required: it is the blob's size"}
            )
        size = int(declared)
        created = await projects.upload_blob(principal, "", project, sha256, size, request.stream())
        if not created:
            response.status_code = 200
        return BlobStored(sha256=sha256, size=size, created=created)

    @api.get(
        "/{project}/blobs/{sha256}",
        summary="Download one blob's bytes",
        response_class=StreamingResponse,
    )
    async def download_blob(principal: CurrentPrincipal, project: _ProjectName, sha256: _Sha256) -> StreamingResponse:
        chunks = await projects.read_blob(principal, "", project, sha256)
        return StreamingResponse(chunks, media_type="application/octet-stream")

    @api.post(
        "/{project}/versions",
        status_code=201,
        response_model=ProjectVersion,
        summary="Commit a version whose blobs are uploaded; 200 when it existed",
        description="409 while a blob is missing; 422 with `file:line:col: message` problems for an invalid "
        "ame.yml; 413 over the size limit.",
        openapi_extra=manifest_body,
    )
    async def commit_version(
        request: Request, response: Response, principal: CurrentPrincipal, project: _ProjectName
    ) -> ProjectVersion:
        files = await _read_manifest(request, manifest_limit)
        version, created = await projects.commit(principal, "", project, files)
        if not created:
            response.status_code = 200
        return version

    @api.post(
        "/{project}/versions/{version_id}/activate",
        response_model=Activation,
        summary="Make a version the project's trigger version: its schedules replace the project's",
        description="`ame project push` calls this after its commit unless --no-triggers is given; a remote "
        "`ame task run` does not. A file with `enableTriggers: false` activates with no schedules.",
    )
    async def activate_version(
        principal: CurrentPrincipal, project: _ProjectName, version_id: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
    ) -> Activation:
        return await projects.activate(principal, "", project, version_id)

    @api.get("/{project}/versions", response_model=VersionList, summary="List a project's versions, newest first")
    async def list_versions(
        principal: CurrentPrincipal,
        project: _ProjectName,
        page_size: Annotated[int | None, Query(ge=1, le=1000)] = None,
        page_token: Annotated[str | None, Query(max_length=32)] = None,
    ) -> VersionList:
        page = await projects.list_versions(principal, "", project, page_size=page_size, page_token=page_token)
        return VersionList(versions=page.versions, next_page_token=page.next_page_token)

    @api.get(
        "/{project}/versions/{version_id}",
        response_model=VersionManifest,
        summary="One version and its manifest",
    )
    async def get_version(
        principal: CurrentPrincipal, project: _ProjectName, version_id: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
    ) -> VersionManifest:
        version, files = await projects.get_version(principal, "", project, version_id)
        return VersionManifest(version=version, files=files)

    return api


def install(app: FastAPI, projects: ProjectService, settings: ApiSettings) -> None:
    """Mount the routes and their error mappings."""
    app.include_router(router(projects, settings))

    @app.exception_handler(TooLarge)
    async def _too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse(status_code=413, content={"error": str(exc)})

    @app.exception_handler(InvalidSpec)
    async def _invalid_spec(_: Request, exc: InvalidSpec) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(exc), "problems": exc.problems})
