"""Tokens and organisations: authenticate a caller's bearer token into a Principal, create, list and revoke
tokens, create and list organisations. Shared by REST and gRPC.

Every request looks its token up by hash (one indexed query), so a revoked or expired token stops working at
the next request; there is deliberately no cache to go stale.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from ame.domain.principals import TOKEN_PREFIX, Principal, PrincipalKind, Scope, check_organisation_name
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import tokens as repo
from ame_api.repositories.runs import NotFound
from ame_api.repositories.tokens import Organisation, TokenRecord
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings
from ame_platform.runtime import Runtime

__all__ = ["Forbidden", "IssuedToken", "TokenService", "Unauthenticated", "hash_token", "new_token"]

# The id of the token from settings (AME_API_BOOTSTRAP_TOKEN); it is not in the table and cannot be revoked.
BOOTSTRAP_TOKEN_ID = "bootstrap"
_MAX_TOKEN_CHARS = 200
_MAX_NAME_CHARS = 200
_MAX_EXPIRY = timedelta(days=3650)


class Unauthenticated(Exception):
    """No token, or not a valid one (401 / UNAUTHENTICATED)."""


class Forbidden(Exception):
    """A valid token without the scope the call needs (403 / PERMISSION_DENIED)."""


def new_token() -> str:
    """A fresh random token; `ame_` makes it recognisable (to people and to secret scanners)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the secret is in `token`, shown this once."""

    token: str
    record: TokenRecord


class TokenService:
    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings
        bootstrap = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else ""
        self._bootstrap_hash = hash_token(bootstrap) if bootstrap else b""

    @property
    def organisation(self) -> str:
        """The server's own organisation: where server-admin tokens and triggers act."""
        return self._settings.organisation

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("authentication required: send a token as 'Authorization: Bearer <token>'")
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthenticated("the token is not valid")
        digest = hash_token(token)
        if self._bootstrap_hash and hmac.compare_digest(digest, self._bootstrap_hash):
            return Principal(self.organisation, Scope.SERVER_ADMIN, PrincipalKind.TOKEN, BOOTSTRAP_TOKEN_ID)
        async with self._rt.pool.acquire() as conn:
            record = await repo.find_valid_token(conn, digest)
        if record is None:
            raise Unauthenticated("the token is not valid (unknown, expired or revoked)")
        if record.run_id and not (record.scope is Scope.RUN and record.created_by == f"run:{record.run_id}"):
            # A log token; a task run's own token (minted for the run, with its scope) acts as a run-scope token.
            return Principal(record.organisation, Scope.READ, PrincipalKind.RUN, record.run_id)
        return Principal(record.organisation, record.scope, PrincipalKind.TOKEN, record.id)

    async def create_log_token(self, principal: Principal, run_id: str) -> IssuedToken:
        """A token that only follows this run's logs, for `log_token_ttl` (a browser's EventSource cannot send
        headers, so it goes in the URL, where it may be logged: hence short-lived and limited to one run)."""
        token = new_token()
        async with self._rt.pool.acquire() as conn:
            await runs_repo.get_run(conn, run_id, organisation=principal.organisation)  # NotFound otherwise
            await repo.delete_expired_run_tokens(conn)
            expires_at = await conn.fetchval(
                "SELECT now() + make_interval(secs => $1)", float(self._settings.log_token_ttl)
            )
            record = await repo.create_token(
                conn,
                token_id=secrets.token_hex(8),
                organisation=principal.organisation,
                scope=Scope.READ,
                name=f"logs of run {run_id}",
                token_hash=hash_token(token),
                created_by=principal.started_by,
                expires_at=expires_at,
                run_id=run_id,
            )
        return IssuedToken(token, record)

    async def create_token(
        self,
        principal: Principal,
        *,
        organisation: str | None = None,
        scope: Scope = Scope.RUN,
        name: str = "",
        expires_in: timedelta | None = None,
    ) -> IssuedToken:
        """A new token. An organisation's admin creates tokens of its organisation up to `admin`; only a
        server-admin names another organisation or creates server-admin tokens."""
        org = organisation or principal.organisation
        if org != principal.organisation and not principal.allows(Scope.SERVER_ADMIN):
            raise NotFound(f"organisation {org[:80]!r} not found")
        if not principal.allows(scope):
            raise Forbidden(f"a {principal.scope.value} token cannot create a {scope.value} token")
        if len(name) > _MAX_NAME_CHARS or not name.isprintable():
            raise InvalidRequest(f"a token's name is at most {_MAX_NAME_CHARS} printable characters")
        if expires_in is not None and not (timedelta(0) < expires_in <= _MAX_EXPIRY):
            raise InvalidRequest("a token expires after a positive time of at most 3650 days")
        token = new_token()
        async with self._rt.pool.acquire() as conn:
            if not await repo.organisation_exists(conn, org):
                raise NotFound(f"organisation {org[:80]!r} not found")
            expires_at = None
            if expires_in is not None:
                expires_at = await conn.fetchval("SELECT now() + $1::interval", expires_in)
            record = await repo.create_token(
                conn,
                token_id=secrets.token_hex(8),
                organisation=org,
                scope=scope,
                name=name,
                token_hash=hash_token(token),
                created_by=principal.started_by,
                expires_at=expires_at,
            )
        return IssuedToken(token, record)

    async def list_tokens(self, principal: Principal, *, organisation: str | None = None) -> list[TokenRecord]:
        """The organisation's tokens (a server-admin: every organisation's, or the one named)."""
        async with self._rt.pool.acquire() as conn:
            return await repo.list_tokens(conn, organisation=self._scope_of(principal, organisation))

    async def revoke_token(self, principal: Principal, token_id: str) -> TokenRecord:
        if len(token_id) > 64:
            raise NotFound(f"token {token_id[:64]!r} not found")
        async with self._rt.pool.acquire() as conn:
            record = await repo.revoke_token(conn, token_id=token_id, organisation=self._scope_of(principal, None))
        if record is None:
            raise NotFound(f"token {token_id!r} not found")
        return record

    def _scope_of(self, principal: Principal, organisation: str | None) -> str | None:
        """Which organisation's tokens the principal may see: its own, or (a server-admin) any (None: all)."""
        if principal.allows(Scope.SERVER_ADMIN):
            return organisation or None
        if organisation and organisation != principal.organisation:
            raise NotFound(f"organisation {organisation[:80]!r} not found")
        return principal.organisation

    async def create_organisation(self, name: str) -> tuple[Organisation, bool]:
        try:
            check_organisation_name(name)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        async with self._rt.pool.acquire() as conn:
            return await repo.create_organisation(conn, name)

    async def list_organisations(self) -> list[Organisation]:
        async with self._rt.pool.acquire() as conn:
            return await repo.list_organisations(conn)
