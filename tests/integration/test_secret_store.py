"""The server's secret store: values in over REST and gRPC, never out; the launcher resolves them at run start,
injects them as environment variables and masks them in output, as `ame task run -l` does; Vault (KV v2) too."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from pydantic import SecretStr

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import bearer, discover_token
from ame_api.repositories import secrets as secrets_repo
from ame_api.secrets.cipher import SecretCipher
from ame_api.secrets.rotation import rotate_all
from ame_api.secrets.settings import SecretsSettings, VaultConfig
from ame_api.settings import ApiSettings
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack
from tests.vault_harness import Vault

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

# Prints the value (the output must show it masked) and its digest (proving the right value was injected).
SHOW = py(
    "import hashlib, os; v = os.environ['TOKEN']; print('token:', v, flush=True); "
    "print('sha256:', hashlib.sha256(v.encode()).hexdigest(), flush=True)"
)


def _key() -> SecretStr:
    return SecretStr(base64.b64encode(os.urandom(32)).decode())


@pytest.fixture
def api_secrets(vault: Vault) -> SecretsSettings:
    vaults = {
        "main": VaultConfig(address=vault.address, token=SecretStr(vault.token), mount=vault.mount),
        # The same vault, open only to another organisation: the server's credentials must not serve this one.
        "closed": VaultConfig(
            address=vault.address, token=SecretStr(vault.token), mount=vault.mount, organisations=["elsewhere-org"]
        ),
    }
    if vault.role_id and vault.secret_id:
        vaults["approle"] = VaultConfig(
            address=vault.address, role_id=vault.role_id, secret_id=SecretStr(vault.secret_id), mount=vault.mount
        )
    return SecretsSettings(keys={"k1": _key()}, launcher_token=SecretStr(secrets.token_urlsafe(24)), vaults=vaults)


async def _run(client: Grpc, *refs: run_pb2.SecretRef) -> tuple[list[str], str, run_pb2.Run]:
    run = await client.submit(SHOW, secrets=list(refs))
    followed = await client.follow(run.id)
    assert followed.end is not None
    deadline = time.monotonic() + 20
    final = await client.get(run.id)
    while final.state != followed.end.end.state:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        final = await client.get(run.id)
    return followed.texts, run_pb2.RunState.Name(final.state), final


def _digest(value: str) -> str:
    return "sha256: " + hashlib.sha256(value.encode()).hexdigest()


async def test_rest_stores_lists_and_deletes_without_ever_returning_a_value(stack: Stack) -> None:
    value = f"VALUE-{secrets.token_hex(8)}"
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=bearer(discover_token())) as rest:
        created = await rest.put("/v1/secrets/db-password", json={"value": value})
        replaced = await rest.put("/v1/secrets/db-password", json={"value": value + "2"})
        listed = await rest.get("/v1/secrets")
        bad_name = await rest.put("/v1/secrets/..%20bad", json={"value": value})
        nul = await rest.put("/v1/secrets/ok", json={"value": value + "\x00"})
        unknown_field = await rest.put("/v1/secrets/ok", json={"value": value, "extra": value})
        deleted = await rest.delete("/v1/secrets/db-password")
        again = await rest.delete("/v1/secrets/db-password")
    assert (created.status_code, replaced.status_code) == (201, 200), created.text
    assert created.json()["name"] == "db-password"
    assert [s["name"] for s in listed.json()["secrets"]] == ["db-password"]
    assert (bad_name.status_code, nul.status_code, unknown_field.status_code) == (422, 422, 422)
    assert "NUL" in nul.json()["error"]
    assert (deleted.status_code, again.status_code) == (204, 404)
    for response in (created, replaced, listed, bad_name, nul, unknown_field, deleted, again):
        assert value not in response.text


async def test_grpc_stores_lists_deletes_and_resolution_needs_the_launcher_credential(
    stack: Stack, client: Grpc
) -> None:
    value = f"VALUE-{secrets.token_hex(8)}"
    put = await client.stub.PutSecret(ame_service_pb2.PutSecretRequest(name="api-key", value=value))
    assert put.created and put.secret.name == "api-key"
    listed = await client.stub.ListSecrets(ame_service_pb2.ListSecretsRequest())
    assert [s.name for s in listed.secrets] == ["api-key"]
    assert value not in str(put) + str(listed)
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await client.stub.PutSecret(ame_service_pb2.PutSecretRequest(name="api-key", value=""))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run = await client.submit(py("print(1)"), secrets=[run_pb2.SecretRef(key="api-key", inject_as="TOKEN")])
    request = ame_service_pb2.ResolveRunSecretsRequest(run_id=run.id, attempt=1)
    for metadata in ((), (("authorization", "Bearer not-the-token"),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.ResolveRunSecrets(request, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert value not in (refused.value.details() or "")

    await client.stub.DeleteSecret(ame_service_pb2.DeleteSecretRequest(name="api-key"))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await client.stub.DeleteSecret(ame_service_pb2.DeleteSecretRequest(name="api-key"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_remote_run_gets_its_secret_as_an_env_var_masked_in_its_output(stack: Stack, client: Grpc) -> None:
    value = f"VALUE-{secrets.token_hex(8)}"
    await client.stub.PutSecret(ame_service_pb2.PutSecretRequest(name="token", value=value))
    texts, state, run = await _run(client, run_pb2.SecretRef(key="token", inject_as="TOKEN"))
    assert state == "RUN_STATE_SUCCEEDED", texts
    assert "token: ***" in texts and _digest(value) in texts
    assert not any(value in t for t in texts)
    assert value not in str(run)
    # Once the attempt has ended, the api hands its secrets out no more.
    token = stack.launchers[0]._settings.api_token
    assert token is not None
    launcher = Grpc(stack.grpc_target, token.get_secret_value())  # calls as the launcher does
    try:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await launcher.stub.ResolveRunSecrets(ame_service_pb2.ResolveRunSecretsRequest(run_id=run.id, attempt=1))
    finally:
        await launcher.close()
    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_run_naming_a_missing_secret_fails_before_it_starts_naming_it(client: Grpc) -> None:
    texts, state, run = await _run(client, run_pb2.SecretRef(key="nowhere", inject_as="TOKEN"))
    assert state == "RUN_STATE_FAILED"
    assert run.started_at.seconds == 0, "the command must not have started"
    assert "TOKEN: secret 'nowhere' not found in AME's secret store" in run.reason
    assert not any(t.startswith("token:") for t in texts)


async def test_vault_secrets_resolve_through_the_servers_vault(client: Grpc, vault: Vault) -> None:
    value = f"VAULT-{secrets.token_hex(8)}"
    path = f"ame-test/{secrets.token_hex(4)}"
    vault.put(path, {"password": value, "user": "svc"})
    texts, state, _ = await _run(client, run_pb2.SecretRef(key=f"{path}#password", inject_as="TOKEN", vault="main"))
    assert state == "RUN_STATE_SUCCEEDED", texts
    assert "token: ***" in texts and _digest(value) in texts
    if vault.role_id:
        texts, state, _ = await _run(
            client, run_pb2.SecretRef(key=f"{path}#password", inject_as="TOKEN", vault="approle")
        )
        assert state == "RUN_STATE_SUCCEEDED", texts
        assert _digest(value) in texts
    # An unknown vault and a missing path: the run fails naming them.
    _, state, run = await _run(client, run_pb2.SecretRef(key="x", inject_as="TOKEN", vault="elsewhere"))
    assert state == "RUN_STATE_FAILED" and "no vault named 'elsewhere'" in run.reason
    _, state, run = await _run(client, run_pb2.SecretRef(key=f"{path}-no", inject_as="TOKEN", vault="main"))
    assert state == "RUN_STATE_FAILED" and f"secret '{path}-no' not found in vault 'main'" in run.reason
    # A vault open to other organisations only: the path exists, and still this organisation's run cannot read it.
    texts, state, run = await _run(client, run_pb2.SecretRef(key=f"{path}#password", inject_as="TOKEN", vault="closed"))
    assert state == "RUN_STATE_FAILED" and "vault 'closed' is not open to organisation 'default'" in run.reason
    assert not any(value in t for t in texts) and _digest(value) not in texts


async def test_rotation_re_encrypts_so_the_old_key_can_be_removed(stack: Stack, api_secrets: SecretsSettings) -> None:
    values = {f"s{i}": f"VALUE-{secrets.token_hex(8)}" for i in range(5)}
    old = SecretCipher(api_secrets.key_bytes(), "k1")
    async with stack.runtime.pool.acquire() as conn:
        for name, value in values.items():
            await secrets_repo.put(conn, "default", name, old.seal("default", name, value))
    both = SecretsSettings(keys={"k1": api_secrets.keys["k1"], "k2": _key()}, active_key="k2")
    keys_json = json.dumps({k: v.get_secret_value() for k, v in both.keys.items()})
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_POSTGRES_DSN=stack.postgres.dsn.get_secret_value(), AME_SECRETS_KEYS=keys_json, AME_SECRETS_ACTIVE_KEY="k2"
    )
    command = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ame_api", "rotate-secrets-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 0, command.stderr
    assert "re-encrypted 5 secret(s) under key 'k2'" in command.stdout
    assert not any(v in command.stdout + command.stderr for v in values.values())
    assert await rotate_all(ApiSettings(postgres=stack.postgres, secrets=both)) == 0  # nothing left under k1
    only_new = SecretCipher({"k2": both.key_bytes()["k2"]}, "k2")
    async with stack.runtime.pool.acquire() as conn:
        stored = await secrets_repo.get_many(conn, "default", list(values))
        key_ids = await conn.fetch("SELECT DISTINCT key_id FROM secrets")
    assert [r["key_id"] for r in key_ids] == ["k2"]
    assert {name: only_new.open("default", name, sealed) for name, sealed in stored.items()} == values
