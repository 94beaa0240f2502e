"""/v1/whoami, /v1/tokens and /v1/organisations: who the caller is, its organisation's tokens, organisations.

What each route needs is in `ame_api.scopes` (tokens: admin; organisations: server-admin).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.principals import Principal, Scope
from ame_api.auth import IssuedToken, TokenService
from ame_api.repositories.tokens import Organisation, TokenRecord
from ame_api.rest.auth import CurrentPrincipal
from ame_api.rest.runs import RunIdPath

_TokenId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
_OrgName = Annotated[str | None, Query(max_length=63, description="A server-admin names an organisation.")]


class WhoAmI(BaseModel):
    organisation: str
    scope: Scope
    kind: str = Field(description="token, trigger or run.")
    token_id: str = Field(description="The token's id (`bootstrap` for the token from settings).")


class TokenOut(BaseModel):
    id: str
    organisation: str
    scope: Scope
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisation: str | None = Field(None, max_length=63, description="Only a server-admin names another one.")
    scope: Scope = Scope.RUN
    name: str = Field("", max_length=200)
    expires_in_seconds: int | None = Field(
        None, ge=1, le=3650 * 86400, description="Lifetime; unset: it never expires (until revoked)."
    )


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself, shown this once; only its hash is kept.")


class LogToken(BaseModel):
    token: str = Field(description="Follows this run's logs only, until it expires.")
    expires_at: datetime | None
    url: str = Field(description="The run's log stream with the token, for a browser's EventSource.")


class OrganisationOut(BaseModel):
    id: str
    created_at: datetime


class OrganisationList(BaseModel):
    organisations: list[OrganisationOut]


class OrganisationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)


def token_out(record: TokenRecord) -> TokenOut:
    return TokenOut(
        id=record.id,
        organisation=record.organisation,
        scope=record.scope,
        name=record.name,
        created_by=record.created_by,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def whoami(principal: Principal) -> WhoAmI:
    return WhoAmI(
        organisation=principal.organisation,
        scope=principal.scope,
        kind=principal.kind.value,
        token_id=principal.subject,
    )


def _created(issued: IssuedToken) -> TokenCreated:
    return TokenCreated(**token_out(issued.record).model_dump(), token=issued.token)


def _org_out(org: Organisation) -> OrganisationOut:
    return OrganisationOut(id=org.id, created_at=org.created_at)


def router(tokens: TokenService) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["access"])

    @api.get("/whoami", response_model=WhoAmI, summary="The caller's organisation and scope")
    async def get_whoami(principal: CurrentPrincipal) -> WhoAmI:
        return whoami(principal)

    @api.get("/tokens", response_model=TokenList, summary="The organisation's tokens (never their secrets)")
    async def list_tokens(principal: CurrentPrincipal, organisation: _OrgName = None) -> TokenList:
        records = await tokens.list_tokens(principal, organisation=organisation)
        return TokenList(tokens=[token_out(r) for r in records])

    @api.post("/tokens", status_code=201, response_model=TokenCreated, summary="Create a token; shown this once")
    async def create_token(principal: CurrentPrincipal, body: TokenCreate) -> TokenCreated:
        issued = await tokens.create_token(
            principal,
            organisation=body.organisation,
            scope=body.scope,
            name=body.name,
            expires_in=timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None,
        )
        return _created(issued)

    @api.post(
        "/tokens/{token_id}/revoke", response_model=TokenOut, summary="Revoke a token; refused from the next request"
    )
    async def revoke_token(principal: CurrentPrincipal, token_id: _TokenId) -> TokenOut:
        return token_out(await tokens.revoke_token(principal, token_id))

    @api.post(
        "/runs/{run_id}/log-token",
        status_code=201,
        response_model=LogToken,
        tags=["runs"],
        summary="A short-lived token that follows this run's logs only, for a browser's EventSource",
        description="EventSource cannot send headers: open `url` (GET /v1/runs/{run_id}/logs?token=...). The token "
        "is refused everywhere else and over gRPC.",
    )
    async def create_log_token(principal: CurrentPrincipal, run_id: RunIdPath) -> LogToken:
        issued = await tokens.create_log_token(principal, run_id)
        return LogToken(
            token=issued.token,
            expires_at=issued.record.expires_at,
            url=f"/v1/runs/{issued.record.run_id}/logs?token={issued.token}",
        )

    @api.get("/organisations", response_model=OrganisationList, summary="Every organisation (server-admin)")
    async def list_organisations(principal: CurrentPrincipal) -> OrganisationList:
        return OrganisationList(organisations=[_org_out(o) for o in await tokens.list_organisations()])

    @api.post(
        "/organisations",
        status_code=201,
        response_model=OrganisationOut,
        summary="Create an organisation (server-admin); 200 when it existed",
    )
    async def create_organisation(
        principal: CurrentPrincipal, body: OrganisationCreate, response: Response
    ) -> OrganisationOut:
        org, created = await tokens.create_organisation(body.name)
        if not created:
            response.status_code = 200
        return _org_out(org)

    return api
