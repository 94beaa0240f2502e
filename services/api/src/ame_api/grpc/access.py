"""The access methods of AmeService: who am I, tokens, organisations (scopes in ame_api.scopes)."""

from __future__ import annotations

from datetime import timedelta

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.auth import TokenService
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary


class AccessMethods:
    """Mixed into AmeServicer; `_tokens` is set by its constructor."""

    _tokens: TokenService
    retry_after_seconds: int

    @unary
    async def WhoAmI(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.WhoAmIRequest, context: Context
    ) -> ame_service_pb2.WhoAmIResponse:
        return convert.whoami_pb(caller())

    @unary
    async def CreateToken(  # noqa: N802
        self, request: ame_service_pb2.CreateTokenRequest, context: Context
    ) -> ame_service_pb2.CreateTokenResponse:
        if request.expires_in_seconds < 0:
            raise convert.DecodeError("expires_in_seconds cannot be negative")
        issued = await self._tokens.create_token(
            caller(),
            organisation=request.organisation or None,
            scope=convert.scope_request(request.scope),
            name=request.name,
            expires_in=timedelta(seconds=request.expires_in_seconds) if request.expires_in_seconds else None,
        )
        return ame_service_pb2.CreateTokenResponse(record=convert.token_to_pb(issued.record), token=issued.token)

    @unary
    async def ListTokens(  # noqa: N802
        self, request: ame_service_pb2.ListTokensRequest, context: Context
    ) -> ame_service_pb2.ListTokensResponse:
        records = await self._tokens.list_tokens(caller(), organisation=request.organisation or None)
        return ame_service_pb2.ListTokensResponse(tokens=[convert.token_to_pb(r) for r in records])

    @unary
    async def RevokeToken(  # noqa: N802
        self, request: ame_service_pb2.RevokeTokenRequest, context: Context
    ) -> ame_service_pb2.RevokeTokenResponse:
        record = await self._tokens.revoke_token(caller(), request.token_id)
        return ame_service_pb2.RevokeTokenResponse(record=convert.token_to_pb(record))

    @unary
    async def CreateOrganisation(  # noqa: N802
        self, request: ame_service_pb2.CreateOrganisationRequest, context: Context
    ) -> ame_service_pb2.CreateOrganisationResponse:
        org, created = await self._tokens.create_organisation(request.name)
        return ame_service_pb2.CreateOrganisationResponse(organisation=convert.organisation_to_pb(org), created=created)

    @unary
    async def ListOrganisations(  # noqa: N802
        self, request: ame_service_pb2.ListOrganisationsRequest, context: Context
    ) -> ame_service_pb2.ListOrganisationsResponse:
        orgs = await self._tokens.list_organisations()
        return ame_service_pb2.ListOrganisationsResponse(organisations=[convert.organisation_to_pb(o) for o in orgs])
