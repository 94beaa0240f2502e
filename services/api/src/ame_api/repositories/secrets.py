"""Stored secrets: ciphertext only. Handlers open the transaction and pass the connection in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ame_api.secrets.cipher import Sealed
from ame_platform.db import Connection

# xmax = 0 only on a freshly inserted row: tells a create from a replace in one statement.
_PUT = """
INSERT INTO secrets (organisation_id, name, ciphertext, nonce, key_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (organisation_id, name) DO UPDATE
SET ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce, key_id = EXCLUDED.key_id, updated_at = now()
RETURNING name, created_at, updated_at, (xmax = 0) AS created
"""

_LIST = "SELECT name, created_at, updated_at FROM secrets WHERE organisation_id = $1 ORDER BY name"

_DELETE = "DELETE FROM secrets WHERE organisation_id = $1 AND name = $2"

_GET_MANY = """
SELECT name, ciphertext, nonce, key_id FROM secrets WHERE organisation_id = $1 AND name = ANY($2::text[])
"""

_NOT_UNDER = """
SELECT organisation_id, name, ciphertext, nonce, key_id FROM secrets
WHERE key_id <> $1 ORDER BY organisation_id, name LIMIT $2
FOR UPDATE SKIP LOCKED
"""

_RESEAL = """
UPDATE secrets SET ciphertext = $4, nonce = $5, key_id = $6
WHERE organisation_id = $1 AND name = $2 AND key_id = $3
"""


@dataclass(frozen=True)
class SecretRow:
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredSecret:
    organisation: str
    name: str
    sealed: Sealed


async def put(conn: Connection, organisation: str, name: str, sealed: Sealed) -> tuple[SecretRow, bool]:
    row = await conn.fetchrow(_PUT, organisation, name, sealed.ciphertext, sealed.nonce, sealed.key_id)
    assert row is not None
    return SecretRow(row["name"], row["created_at"], row["updated_at"]), bool(row["created"])


async def list_secrets(conn: Connection, organisation: str) -> list[SecretRow]:
    rows = await conn.fetch(_LIST, organisation)
    return [SecretRow(r["name"], r["created_at"], r["updated_at"]) for r in rows]


async def delete(conn: Connection, organisation: str, name: str) -> bool:
    status = await conn.execute(_DELETE, organisation, name)
    return str(status).endswith(" 1")


async def get_many(conn: Connection, organisation: str, names: Sequence[str]) -> dict[str, Sealed]:
    rows = await conn.fetch(_GET_MANY, organisation, list(names))
    return {r["name"]: Sealed(bytes(r["ciphertext"]), bytes(r["nonce"]), r["key_id"]) for r in rows}


async def not_under(conn: Connection, key_id: str, limit: int) -> list[StoredSecret]:
    """Secrets under another key than `key_id`, locked for re-encryption (call inside a transaction)."""
    rows = await conn.fetch(_NOT_UNDER, key_id, limit)
    return [
        StoredSecret(r["organisation_id"], r["name"], Sealed(bytes(r["ciphertext"]), bytes(r["nonce"]), r["key_id"]))
        for r in rows
    ]


async def reseal(conn: Connection, secret: StoredSecret, sealed: Sealed) -> None:
    await conn.execute(
        _RESEAL, secret.organisation, secret.name, secret.sealed.key_id, sealed.ciphertext, sealed.nonce, sealed.key_id
    )
