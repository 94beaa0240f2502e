"""A small async client for HashiCorp Vault's KV v2 engine, with token or AppRole authentication.

A key is `path/to/secret` or `path/to/secret#field`, as `!vault` entries write it (and as the local runner reads
it): without `#field`, a secret with one field yields it, one with a field named `value` yields that.
"""

from __future__ import annotations

import asyncio

import httpx

from ame_api.secrets.settings import VaultConfig


class VaultError(Exception):
    """Vault could not be read; the message says where and why, never a value."""


class VaultClient:
    def __init__(self, name: str, config: VaultConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self._config = config
        self._address = config.address.rstrip("/")
        self._client = httpx.AsyncClient(transport=transport, timeout=config.timeout)
        self._token: str | None = config.token.get_secret_value() if config.token else None
        self._login_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._client.aclose()

    def _headers(self, token: str | None = None) -> dict[str, str]:
        headers = {}
        if token:
            headers["X-Vault-Token"] = token
        if self._config.namespace:
            headers["X-Vault-Namespace"] = self._config.namespace
        return headers

    async def _login(self) -> str:
        """An AppRole login; the token is kept until Vault refuses it."""
        config = self._config
        assert config.role_id and config.secret_id
        url = f"{self._address}/v1/auth/{config.approle_mount.strip('/')}/login"
        body = {"role_id": config.role_id, "secret_id": config.secret_id.get_secret_value()}
        try:
            response = await self._client.post(url, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise VaultError(f"cannot reach vault {self.name!r}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise VaultError(f"vault {self.name!r} refused the AppRole login (HTTP {response.status_code})")
        token = (response.json().get("auth") or {}).get("client_token")
        if not isinstance(token, str) or not token:
            raise VaultError(f"vault {self.name!r} answered the AppRole login without a token")
        return token

    async def _token_for(self, refresh: bool) -> str:
        async with self._login_lock:
            if self._token is None or (refresh and self._config.role_id):
                self._token = await self._login()
            return self._token

    async def get(self, key: str) -> str | None:
        """The value under `key`, None when Vault has no such secret or field."""
        path, _, field = key.partition("#")
        url = f"{self._address}/v1/{self._config.mount.strip('/')}/data/{path.strip('/')}"
        response = await self._read(url, path, refresh=False)
        if response.status_code == 403 and self._config.role_id:
            response = await self._read(url, path, refresh=True)  # an AppRole token that expired
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise VaultError(f"vault {self.name!r} refused access to {path!r} (HTTP {response.status_code})")
        if response.status_code != 200:
            raise VaultError(f"vault {self.name!r} answered HTTP {response.status_code} for {path!r}")
        try:
            fields = (response.json().get("data") or {}).get("data") or {}
        except ValueError:
            raise VaultError(f"vault {self.name!r} answered {path!r} with something that is not JSON") from None
        if field:
            value = fields.get(field)
            return None if value is None else str(value)
        if len(fields) == 1:
            return str(next(iter(fields.values())))
        if "value" in fields:
            return str(fields["value"])
        names = ", ".join(sorted(fields)) or "none"
        raise VaultError(f"vault secret {path!r} has several fields ({names}); name one as {path}#FIELD")

    async def _read(self, url: str, path: str, *, refresh: bool) -> httpx.Response:
        token = await self._token_for(refresh)
        try:
            return await self._client.get(url, headers=self._headers(token))
        except httpx.HTTPError as exc:
            raise VaultError(f"cannot reach vault {self.name!r} for {path!r}: {type(exc).__name__}") from None
