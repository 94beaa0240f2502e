"""The secret-store methods of AmeService: put, list, delete, and resolution for launchers."""

from __future__ import annotations

import grpc

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, details, unary
from ame_api.secrets import launcher_auth
from ame_api.secrets.service import AttemptNotActive, SecretService


class SecretMethods:
    """Mixed into AmeServicer; `_secrets` is set by its constructor."""

    _secrets: SecretService
    retry_after_seconds: int

    @unary
    async def PutSecret(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.PutSecretRequest, context: Context
    ) -> ame_service_pb2.PutSecretResponse:
        row, created = await self._secrets.put(caller(), request.name, request.value, organisation=request.organisation)
        return ame_service_pb2.PutSecretResponse(secret=convert.secret_info_pb(row), created=created)

    @unary
    async def ListSecrets(  # noqa: N802
        self, request: ame_service_pb2.ListSecretsRequest, context: Context
    ) -> ame_service_pb2.ListSecretsResponse:
        rows = await self._secrets.list_secrets(caller(), organisation=request.organisation)
        return ame_service_pb2.ListSecretsResponse(secrets=[convert.secret_info_pb(r) for r in rows])

    @unary
    async def DeleteSecret(  # noqa: N802
        self, request: ame_service_pb2.DeleteSecretRequest, context: Context
    ) -> ame_service_pb2.DeleteSecretResponse:
        await self._secrets.delete(caller(), request.name, organisation=request.organisation)
        return ame_service_pb2.DeleteSecretResponse()

    @unary
    async def ResolveRunSecrets(  # noqa: N802
        self, request: ame_service_pb2.ResolveRunSecretsRequest, context: Context
    ) -> ame_service_pb2.ResolveRunSecretsResponse:
        try:
            launcher_auth.check(self._secrets.launcher_token, context.invocation_metadata() or ())
        except launcher_auth.NotALauncher as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, details(str(exc)))
        run_id = convert.run_id_request(request.run_id)
        try:
            resolved = await self._secrets.resolve_for_run(
                convert.organisation_request(request.organisation), run_id, request.attempt
            )
        except AttemptNotActive as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, details(str(exc)))
        return ame_service_pb2.ResolveRunSecretsResponse(secrets=[convert.resolved_secret_pb(r) for r in resolved])
