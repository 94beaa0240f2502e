"""The launcher's secret source: a run's secrets, resolved by the api when the run starts.

One authenticated gRPC call (`ResolveRunSecrets`, with the launcher credential) per run attempt returns the values
of the secrets the run's spec declares, `!ame` and `!vault` alike; the api holds the store and the vault
credentials. The values live only in this process's memory and the run's environment: never on the bus, in a
spec or a log line. The runner masks them in output as it does for `ame task run -l`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from pydantic import SecretStr

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.runner import SecretError

# The metadata key the api's launcher check reads (ame_api.secrets.launcher_auth).
_AUTHORIZATION = "authorization"
# Tries after the first when the api is unavailable (0.5, 1, 2 s apart).
_RETRIES = 3


class RunSecrets:
    """Resolves a run attempt's secrets with one call, on first use; `ame()` and `vault(name)` are its sources."""

    def __init__(
        self,
        target: str | None,
        token: SecretStr | None,
        organisation: str,
        run_id: str,
        attempt: int,
        timeout: float,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        self._tls = tls
        self._ca_file = ca_file
        self._organisation = organisation
        self._target = target
        self._token = token
        self._run_id = run_id
        self._attempt = attempt
        self._timeout = timeout
        self._resolved: dict[tuple[str, str], tuple[str | None, str]] | None = None
        self._lock = asyncio.Lock()

    def ame(self) -> _Source:
        return _Source(self, "")

    def vault(self, name: str) -> _Source:
        return _Source(self, name)

    async def lookup(self, vault: str, key: str) -> str | None:
        async with self._lock:
            if self._resolved is None:
                self._resolved = await self._resolve()
        value, problem = self._resolved.get((vault, key), (None, ""))
        if problem:
            raise SecretError(problem)
        return value

    async def _resolve(self) -> dict[tuple[str, str], tuple[str | None, str]]:
        if not self._target or self._token is None:
            raise SecretError(
                "this launcher cannot resolve secrets: AME_LAUNCHER_API_TARGET and AME_LAUNCHER_API_TOKEN are not set"
            )
        request = ame_service_pb2.ResolveRunSecretsRequest(
            run_id=self._run_id, attempt=self._attempt, organisation=self._organisation
        )
        metadata = ((_AUTHORIZATION, f"Bearer {self._token.get_secret_value()}"),)
        async with self._channel(self._target) as channel:
            stub = ame_service_pb2_grpc.AmeServiceStub(channel)
            for retry in range(_RETRIES + 1):
                try:
                    response = await stub.ResolveRunSecrets(request, metadata=metadata, timeout=self._timeout)
                    break
                except grpc.aio.AioRpcError as exc:
                    # An api restarting, or its database away: worth a few tries before the run fails.
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and retry < _RETRIES:
                        await asyncio.sleep(0.5 * 2**retry)
                        continue
                    # The api's details name secrets and states, never values.
                    raise SecretError(f"the api refused to resolve this run's secrets: {exc.details()}") from None
        return {(s.vault, s.key): (s.value if s.found else None, s.problem) for s in response.secrets}

    def _channel(self, target: str) -> grpc.aio.Channel:
        if not self._tls:
            return grpc.aio.insecure_channel(target)
        roots = self._ca_file.read_bytes() if self._ca_file is not None else None
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))


class _Source:
    def __init__(self, secrets: RunSecrets, vault: str) -> None:
        self._secrets = secrets
        self._vault = vault

    async def get_secret(self, key: str) -> str | None:
        return await self._secrets.lookup(self._vault, key)
