"""Organisations and API tokens. A token is stored as the sha256 of its secret, never the secret itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.domain.principals import Scope
from ame_platform.db import Connection


@dataclass(frozen=True)
class TokenRecord:
    id: str
    organisation: str
    scope: Scope
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    run_id: str = ""


@dataclass(frozen=True)
class Organisation:
    id: str
    created_at: datetime


_TOKEN_COLUMNS = "id, organisation_id, scope, name, created_by, created_at, expires_at, revoked_at, run_id"

# Valid means: not revoked and not expired, judged by the database's clock at this request.
_FIND_VALID = f"""
SELECT {_TOKEN_COLUMNS} FROM api_tokens
WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"""


def _row_to_token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        organisation=row["organisation_id"],
        scope=Scope(row["scope"]),
        name=row["name"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        run_id=str(row["run_id"] or ""),
    )


async def find_valid_token(conn: Connection, token_hash: bytes) -> TokenRecord | None:
    row = await conn.fetchrow(_FIND_VALID, token_hash)
    return _row_to_token(row) if row is not None else None


async def create_token(
    conn: Connection,
    *,
    token_id: str,
    organisation: str,
    scope: Scope,
    name: str,
    token_hash: bytes,
    created_by: str,
    expires_at: datetime | None,
    run_id: str | None = None,
) -> TokenRecord:
    row = await conn.fetchrow(
        f"""INSERT INTO api_tokens (id, organisation_id, scope, name, hash, created_by, expires_at, run_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_TOKEN_COLUMNS}""",
        token_id,
        organisation,
        scope.value,
        name,
        token_hash,
        created_by,
        expires_at,
        uuid.UUID(run_id) if run_id else None,
    )
    assert row is not None
    return _row_to_token(row)


async def delete_expired_run_tokens(conn: Connection) -> None:
    """Tokens of one run (a log token, a task run's own) are removed an hour after they expire or are revoked."""
    await conn.execute(
        """DELETE FROM api_tokens WHERE run_id IS NOT NULL
           AND LEAST(expires_at, revoked_at) < now() - make_interval(hours => 1)"""
    )


async def list_tokens(conn: Connection, *, organisation: str | None) -> list[TokenRecord]:
    """The tokens of one organisation (None: of all), oldest first."""
    rows = await conn.fetch(
        f"""SELECT {_TOKEN_COLUMNS} FROM api_tokens
            WHERE ($1::text IS NULL OR organisation_id = $1) AND run_id IS NULL
            ORDER BY created_at, id""",
        organisation,
    )
    return [_row_to_token(row) for row in rows]


async def find_token(conn: Connection, *, token_id: str, organisation: str | None) -> TokenRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = $1 AND ($2::text IS NULL OR organisation_id = $2)",
        token_id,
        organisation,
    )
    return _row_to_token(row) if row is not None else None


async def revoke_token(conn: Connection, *, token_id: str, organisation: str | None) -> TokenRecord | None:
    """Revoke the token (a second revoke keeps the first time); None when the organisation has no such token."""
    row = await conn.fetchrow(
        f"""UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
            WHERE id = $1 AND ($2::text IS NULL OR organisation_id = $2) AND run_id IS NULL
            RETURNING {_TOKEN_COLUMNS}""",
        token_id,
        organisation,
    )
    return _row_to_token(row) if row is not None else None


async def count_tokens(conn: Connection, *, scope: Scope) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM api_tokens WHERE scope = $1", scope.value))


async def create_organisation(conn: Connection, name: str) -> tuple[Organisation, bool]:
    """The organisation, created unless it exists; and whether it was created."""
    row = await conn.fetchrow(
        "INSERT INTO organisations (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING RETURNING id, created_at", name
    )
    if row is not None:
        return Organisation(row["id"], row["created_at"]), True
    row = await conn.fetchrow("SELECT id, created_at FROM organisations WHERE id = $1", name)
    assert row is not None
    return Organisation(row["id"], row["created_at"]), False


async def organisation_exists(conn: Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)", name))


async def list_organisations(conn: Connection) -> list[Organisation]:
    rows = await conn.fetch("SELECT id, created_at FROM organisations ORDER BY id")
    return [Organisation(row["id"], row["created_at"]) for row in rows]


async def revoke_run_tokens(conn: Connection, *, run_id: str) -> None:
    """Revoke the token(s) minted for a run's own use (`ame.Client()` in an orchestration task) when it ends."""
    await conn.execute(
        """UPDATE api_tokens SET revoked_at = now()
           WHERE created_by = $1 AND created_by LIKE 'run:%' AND revoked_at IS NULL""",
        f"run:{run_id}",
    )
