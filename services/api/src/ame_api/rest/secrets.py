"""/v1/secrets: the organisation's secret store (`ame secret add/list/rm`). No route ever returns a value."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from ame_api.repositories.secrets import SecretRow
from ame_api.rest.auth import CurrentPrincipal
from ame_api.secrets.service import SecretService

# Checked by the service with a message that never holds the value; a pattern here would only repeat it.
SecretName = Annotated[str, Path(min_length=1, max_length=256, description="The secret's name.")]


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="The value; stored encrypted, never returned.")


class SecretInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secrets: list[SecretInfo]


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


def router(secrets: SecretService) -> APIRouter:
    api = APIRouter(prefix="/v1/secrets", tags=["secrets"])

    # The organisation is always the caller's (its token's).
    @api.put(
        "/{name:path}",
        response_model=SecretInfo,
        status_code=201,
        summary="Store a secret",
        description="Creates the secret (201) or replaces its value (200). The value is encrypted at rest and is "
        "never returned by any route; only a launcher starting a run that declares it can read it.",
        responses={200: {"model": SecretInfo, "description": "An existing secret's value was replaced."}},
    )
    async def put_secret(
        principal: CurrentPrincipal, name: SecretName, body: SecretValue, response: Response
    ) -> SecretInfo:
        row, created = await secrets.put(principal, name, body.value, organisation=None)
        response.status_code = 201 if created else 200
        return _info(row)

    @api.get("", response_model=SecretList, summary="List secrets (names and times only)")
    async def list_secrets(principal: CurrentPrincipal) -> SecretList:
        return SecretList(secrets=[_info(r) for r in await secrets.list_secrets(principal, organisation=None)])

    @api.delete("/{name:path}", status_code=204, summary="Delete a secret")
    async def delete_secret(principal: CurrentPrincipal, name: SecretName) -> Response:
        await secrets.delete(principal, name, organisation=None)
        return Response(status_code=204)

    return api
