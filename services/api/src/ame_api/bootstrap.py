"""The first token of a server: created straight in the database, for `ame server`'s first start and for
`ame-api create-admin-token` (a standalone deployment's operator), before any token exists to ask the API with."""

from __future__ import annotations

import secrets

from ame.domain.principals import Scope
from ame_api.auth import hash_token, new_token
from ame_api.repositories import tokens as repo
from ame_platform.db import Connection


async def create_token(
    conn: Connection, *, organisation: str = "default", scope: Scope = Scope.SERVER_ADMIN, name: str, created_by: str
) -> tuple[str, str]:
    """A new token; returns (its id, the token itself)."""
    if not await repo.organisation_exists(conn, organisation):
        raise LookupError(f"organisation {organisation!r} does not exist")
    token = new_token()
    record = await repo.create_token(
        conn,
        token_id=secrets.token_hex(8),
        organisation=organisation,
        scope=scope,
        name=name,
        token_hash=hash_token(token),
        created_by=created_by,
        expires_at=None,
    )
    return record.id, token


async def is_valid(conn: Connection, token: str) -> bool:
    return await repo.find_valid_token(conn, hash_token(token)) is not None
