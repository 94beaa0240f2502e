"""Where secret values come from: AME's local store, Vault (KV v2), or a server added later.

`SecretSource` is the seam: `!ame` secrets are looked up through whichever source the caller
passes (the local file store today, the control plane later), `!vault` secrets through a source
built per vault name. All secrets of a run are resolved before anything starts, and every
missing one is reported at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import httpx

__all__ = [
    "LocalSecretStore",
    "SecretError",
    "SecretRequest",
    "SecretSource",
    "VaultSecretSource",
    "resolve_secrets",
    "vault_source_from_env",
]


class SecretError(Exception):
    """A secret could not be resolved; the message says which and why, never a value."""


class SecretSource(Protocol):
    async def get_secret(self, key: str) -> str | None:
        """The value stored under `key`, or None if there is no such secret."""
        ...


@dataclass(frozen=True)
class SecretRequest:
    """One secret a task needs, in the shape of the spec's `!ame` / `!vault` entries."""

    kind: Literal["ame", "vault"]
    key: str
    inject_as: str
    vault: str | None = None


class LocalSecretStore:
    """`!ame` secrets on this machine: a JSON object in a 0600 file under the AME home."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def get_secret(self, key: str) -> str | None:
        return self.read().get(key)

    def read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise SecretError(f"the secret store {self.path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SecretError(f"the secret store {self.path} should hold a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def list_keys(self) -> list[str]:
        return sorted(self.read())

    def add(self, key: str, value: str) -> None:
        data = self.read()
        data[key] = value
        self._write(data)

    def remove(self, key: str) -> bool:
        data = self.read()
        if key not in data:
            return False
        del data[key]
        self._write(data)
        return True

    def _write(self, data: Mapping[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        # Created 0600 from the start: never a moment where the values are world-readable.
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(dict(sorted(data.items())), handle, indent=2)
        os.replace(staging, self.path)


class VaultSecretSource:
    """Reads HashiCorp Vault KV v2. A key is `path/to/secret` or `path/to/secret#field`.

    Without `#field`, a secret with a single field yields that field, and one with a field named
    `value` yields it; anything else is ambiguous and an error.
    """

    def __init__(
        self,
        address: str,
        token: str,
        *,
        mount: str = "secret",
        namespace: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._address = address.rstrip("/")
        self._token = token
        self._mount = mount.strip("/")
        self._namespace = namespace
        self._transport = transport

    async def get_secret(self, key: str) -> str | None:
        path, _, field = key.partition("#")
        headers = {"X-Vault-Token": self._token}
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        url = f"{self._address}/v1/{self._mount}/data/{path.strip('/')}"
        # Imported here: httpx costs a noticeable part of `ame task run -l` start-up, and most
        # runs have no Vault secret.
        import httpx

        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=10.0) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise SecretError(f"cannot reach Vault at {self._address}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise SecretError(f"Vault refused access to {path!r} (HTTP {response.status_code})")
        if response.status_code != 200:
            raise SecretError(f"Vault answered HTTP {response.status_code} for {path!r}")
        fields = (response.json().get("data") or {}).get("data") or {}
        if field:
            value = fields.get(field)
            return None if value is None else str(value)
        if len(fields) == 1:
            return str(next(iter(fields.values())))
        if "value" in fields:
            return str(fields["value"])
        names = ", ".join(sorted(fields)) or "none"
        raise SecretError(f"Vault secret {path!r} has several fields ({names}); name one as {path}#FIELD")


def vault_source_from_env(
    vault_name: str,
    environ: Mapping[str, str] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VaultSecretSource:
    """Vault settings for `vault_name`: AME_VAULT_<NAME>_ADDR/_TOKEN, else VAULT_ADDR/VAULT_TOKEN."""
    env = os.environ if environ is None else environ
    prefix = "AME_VAULT_" + "".join(c if c.isalnum() else "_" for c in vault_name.upper()) + "_"
    address = env.get(prefix + "ADDR") or env.get("VAULT_ADDR")
    token = env.get(prefix + "TOKEN") or env.get("VAULT_TOKEN")
    if not address or not token:
        raise SecretError(
            f"vault {vault_name!r} is not configured: set VAULT_ADDR and VAULT_TOKEN "
            f"(or {prefix}ADDR and {prefix}TOKEN)"
        )
    return VaultSecretSource(
        address,
        token,
        mount=env.get(prefix + "MOUNT") or env.get("VAULT_KV_MOUNT") or "secret",
        namespace=env.get("VAULT_NAMESPACE"),
        transport=transport,
    )


async def resolve_secrets(
    requests: Sequence[SecretRequest],
    *,
    ame: SecretSource,
    vault: Callable[[str], SecretSource],
) -> dict[str, str]:
    """Return {inject_as: value} for every request, or raise one SecretError naming every problem."""
    values: dict[str, str] = {}
    problems: list[str] = []
    vaults: dict[str, SecretSource] = {}
    for request in requests:
        try:
            if request.kind == "ame":
                value = await ame.get_secret(request.key)
                where = "AME's secret store (add it with `ame secret add -l`)"
            else:
                name = request.vault or ""
                if name not in vaults:
                    vaults[name] = vault(name)
                value = await vaults[name].get_secret(request.key)
                where = f"vault {name!r}"
        except SecretError as exc:
            problems.append(f"{request.inject_as}: {exc}")
            continue
        if value is None:
            problems.append(f"{request.inject_as}: secret {request.key!r} not found in {where}")
        else:
            values[request.inject_as] = value
    if problems:
        raise SecretError("missing secrets:\n  " + "\n  ".join(problems))
    return values
