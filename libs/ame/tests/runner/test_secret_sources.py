"""Secret sources: the 0600 local store, Vault KV v2 over HTTP, and resolving a task's secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from ame.runner.secret_sources import (
    LocalSecretStore,
    SecretError,
    SecretRequest,
    VaultSecretSource,
    resolve_secrets,
    vault_source_from_env,
)


def test_local_store_is_private_and_round_trips(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "home" / "secrets.json")
    store.add("b", "2")
    store.add("a", "1")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.list_keys() == ["a", "b"]
    assert store.remove("a")
    assert not store.remove("a")
    assert store.read() == {"b": "2"}


def _vault(handler: httpx.MockTransport) -> VaultSecretSource:
    return VaultSecretSource("http://vault.test", "t0ken", transport=handler)


async def test_vault_reads_kv_v2() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/secret/data/app/db":
            return httpx.Response(200, json={"data": {"data": {"password": "pw", "user": "u"}}})
        if request.url.path == "/v1/secret/data/app/single":
            return httpx.Response(200, json={"data": {"data": {"token": "abc"}}})
        return httpx.Response(404, json={"errors": []})

    vault = _vault(httpx.MockTransport(handle))
    assert await vault.get_secret("app/db#password") == "pw"
    assert await vault.get_secret("app/single") == "abc"
    assert await vault.get_secret("app/missing") is None
    with pytest.raises(SecretError, match="several fields"):
        await vault.get_secret("app/db")
    assert seen[0].headers["X-Vault-Token"] == "t0ken"


def test_vault_needs_configuration() -> None:
    with pytest.raises(SecretError, match="VAULT_ADDR"):
        vault_source_from_env("corp", {})
    source = vault_source_from_env("corp", {"VAULT_ADDR": "http://v", "VAULT_TOKEN": "t"})
    assert isinstance(source, VaultSecretSource)


async def test_resolve_reports_every_missing_secret_without_values(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets.json")
    store.add("present", "v4lue")
    requests = [
        SecretRequest("ame", "present", "A"),
        SecretRequest("ame", "absent", "B"),
        SecretRequest("vault", "x/y", "C", vault="corp"),
    ]

    def no_vault(name: str) -> VaultSecretSource:
        return vault_source_from_env(name, {})

    with pytest.raises(SecretError) as raised:
        await resolve_secrets(requests, ame=store, vault=no_vault)
    message = str(raised.value)
    assert "B: secret 'absent' not found" in message
    assert "C: vault 'corp' is not configured" in message
    assert "v4lue" not in message
    assert await resolve_secrets(requests[:1], ame=store, vault=no_vault) == {"A": "v4lue"}
