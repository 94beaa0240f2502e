"""Secret use cases shared by REST and gRPC, and resolution for launchers.

Values go in (put) and out only to a launcher resolving a run it is starting. No method returns a value to any
other caller, and no error message holds one: messages name secrets, never their contents.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

import asyncpg
from pydantic import SecretStr

from ame.domain import TERMINAL_STATES, Run
from ame.domain.orchestrations import RUN_TOKEN_KEY, RUN_TOKEN_VAULT
from ame.domain.principals import Principal, Scope
from ame_api import organisations
from ame_api.auth import hash_token, new_token
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import secrets as repo
from ame_api.repositories import tokens as tokens_repo
from ame_api.repositories.secrets import SecretRow
from ame_api.runs import InvalidRequest, NotFound
from ame_api.secrets.cipher import KeyUnavailable, Sealed, SecretCipher
from ame_api.secrets.vault import VaultClient, VaultError
from ame_api.settings import ApiSettings
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,255}$")
MAX_VALUE_BYTES = 64 * 1024


class AttemptNotActive(RuntimeError):
    """The run's attempt has ended (or been superseded): its secrets are no longer handed out."""


@dataclass(frozen=True)
class Resolved:
    vault: str  # empty for AME's own store
    key: str
    value: str | None  # None: not found (or see problem)
    problem: str = ""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest(
            "a secret name is 1-256 characters: letters, digits, '_', '.', '-', '/', starting with a letter, "
            "digit or '_'"
        )
    return name


class SecretService:
    """Also a lifecycle component, so that the vault clients it opened close when the api drains."""

    name = "secrets"

    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings
        secrets = settings.secrets
        self._cipher = SecretCipher(secrets.key_bytes(), secrets.active_key)
        self._vaults: dict[str, VaultClient] = {}

    @property
    def launcher_token(self) -> SecretStr | None:
        return self._settings.secrets.launcher_token

    async def start(self, supervisor: Supervisor) -> None:
        pass

    async def drain(self) -> None:
        clients, self._vaults = list(self._vaults.values()), {}
        for client in clients:
            await client.close()

    async def put(
        self, principal: Principal, name: str, value: str, *, organisation: str | None = None
    ) -> tuple[SecretRow, bool]:
        org = organisations.resolve(principal, organisation)
        check_name(name)
        if not value:
            raise InvalidRequest(f"secret {name!r}: the value is empty")
        try:
            encoded = value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(f"secret {name!r}: the value is not valid UTF-8 text") from None
        if len(encoded) > MAX_VALUE_BYTES:
            raise InvalidRequest(f"secret {name!r}: the value is over {MAX_VALUE_BYTES} bytes")
        if "\x00" in value:
            raise InvalidRequest(f"secret {name!r}: the value holds a NUL character, which no environment can carry")
        try:
            sealed = self._cipher.seal(org, name, value)
        except KeyUnavailable as exc:
            raise InvalidRequest(str(exc)) from None
        async with self._rt.pool.acquire() as conn:
            return await repo.put(conn, org, name, sealed)

    async def list_secrets(self, principal: Principal, *, organisation: str | None = None) -> list[SecretRow]:
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            return await repo.list_secrets(conn, org)

    async def delete(self, principal: Principal, name: str, *, organisation: str | None = None) -> None:
        org = organisations.resolve(principal, organisation)
        check_name(name)
        async with self._rt.pool.acquire() as conn:
            if not await repo.delete(conn, org, name):
                raise NotFound(f"secret {name!r} not found")

    def open_sealed(self, organisation: str, name: str, sealed: Sealed) -> str | None:
        """The value of a secret row read elsewhere (a webhook's signing key, read with its hook), for the api's
        own use: it is never returned to a caller. None when it cannot be opened (its key is not configured)."""
        try:
            return self._cipher.open(organisation, name, sealed)
        except KeyUnavailable as exc:
            log.error("secret %r of organisation %s cannot be opened: %s", name, organisation, exc)
            return None

    async def resolve_for_run(self, organisation: str, run_id: str, attempt: int) -> list[Resolved]:
        """The values of the secrets the run's spec declares, while `attempt` is the run's live attempt.

        The caller has checked the launcher credential. The registry may not have seen the attempt's `launching`
        event yet, so a queued run is accepted; an ended attempt, or one a later attempt replaced, is not.
        """
        async with self._rt.pool.acquire() as conn:
            run = await runs_repo.get_run(conn, run_id, organisation=organisation or self._settings.organisation)
            if attempt < run.attempt or (attempt == run.attempt and run.state in TERMINAL_STATES):
                raise AttemptNotActive(f"attempt {attempt} of run {run_id} is not launching or running")
            names = sorted({s.key for s in run.spec.secrets if not s.vault})
            stored = await repo.get_many(conn, run.organisation, names) if names else {}
        results: list[Resolved] = []
        seen: set[tuple[str, str]] = set()
        for ref in run.spec.secrets:
            if (ref.vault, ref.key) in seen:
                continue
            seen.add((ref.vault, ref.key))
            if not ref.vault:
                sealed = stored.get(ref.key)
                if sealed is None:
                    results.append(Resolved("", ref.key, None))
                    continue
                try:
                    results.append(Resolved("", ref.key, self._cipher.open(run.organisation, ref.key, sealed)))
                except KeyUnavailable as exc:
                    log.error("run %s: %s", run_id, exc)
                    results.append(Resolved("", ref.key, None, str(exc)))
                continue
            if ref.vault == RUN_TOKEN_VAULT:
                results.append(await self._run_token(run))
                continue
            results.append(await self._from_vault(run.organisation, ref.vault, ref.key))
        return results

    async def _run_token(self, run: Run) -> Resolved:
        """A `run`-scope token of the run's organisation for `ame.Client()` inside the run (an orchestration task
        that starts another task), expiring with the run's timeout (else AME_ORCHESTRATIONS_RUN_TOKEN_TTL).
        Minted per attempt, stored only as its hash, revoked when the run ends (the registry); the runner masks it in
        the run's output like any secret. It carries the run's id, so `ame token list` leaves it out and it is
        deleted an hour after it ends, like a log token (a `*/1` task mints 1,440 a day)."""
        token = new_token()
        ttl = float(run.spec.timeout_seconds or self._settings.orchestrations.run_token_ttl) + 60.0
        async with self._rt.pool.acquire() as conn:
            await tokens_repo.delete_expired_run_tokens(conn)
            expires_at = await conn.fetchval("SELECT now() + make_interval(secs => $1)", ttl)
            await tokens_repo.create_token(
                conn,
                token_id=secrets.token_hex(8),
                organisation=run.organisation,
                scope=Scope.RUN,
                name=f"run {run.id}",
                token_hash=hash_token(token),
                created_by=f"run:{run.id}",
                expires_at=expires_at,
                run_id=run.id,
            )
        return Resolved(RUN_TOKEN_VAULT, RUN_TOKEN_KEY, token)

    async def _from_vault(self, organisation: str, vault: str, key: str) -> Resolved:
        config = self._settings.secrets.vaults.get(vault)
        if config is None:
            return Resolved(vault, key, None, f"the server has no vault named {vault!r} configured")
        # The vault's credentials are the server's: only the organisations it names (else the server's own) may
        # read through them, or any organisation could read any other's paths.
        allowed = config.organisations or [self._settings.organisation]
        if organisation not in allowed:
            return Resolved(vault, key, None, f"vault {vault!r} is not open to organisation {organisation!r}")
        client = self._vaults.get(vault)
        if client is None:
            client = self._vaults[vault] = VaultClient(vault, config)
        try:
            return Resolved(vault, key, await client.get(key))
        except VaultError as exc:
            return Resolved(vault, key, None, str(exc))


async def rotate(pool: asyncpg.Pool, cipher: SecretCipher, *, batch: int = 100) -> int:
    """Re-encrypt every secret not under the active key with it; returns how many. Safe to run twice or at once
    from two places (rows are claimed with SKIP LOCKED and updated only if still under their old key)."""
    if cipher.active_key is None:
        raise KeyUnavailable("no active secrets key to rotate to")
    done = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await repo.not_under(conn, cipher.active_key, batch)
            for row in rows:
                value = cipher.open(row.organisation, row.name, row.sealed)
                await repo.reseal(conn, row, cipher.seal(row.organisation, row.name, value))
        done += len(rows)
        if len(rows) < batch:
            return done
