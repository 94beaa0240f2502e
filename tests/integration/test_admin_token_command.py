"""`ame-api create-admin-token`: a standalone deployment's first token, printed alone on stdout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

import asyncpg
import pytest

from ame_server.server import migrate_all

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _create(pg_dsn: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")} | {"AME_POSTGRES_DSN": pg_dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ame_api",
        "create-admin-token",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_create_admin_token_prints_a_token_stored_only_as_its_hash(pg_dsn: str) -> None:
    await migrate_all(pg_dsn)
    code, out, err = await _create(pg_dsn, "--scope", "admin", "--name", "first")
    assert code == 0, err
    token = out.strip()
    assert out.count("\n") == 1 and token.startswith("ame_")

    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow("SELECT organisation_id, scope, name, hash FROM api_tokens")
        dump = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM api_tokens t")
    finally:
        await conn.close()
    assert row is not None
    assert (row["organisation_id"], row["scope"], row["name"]) == ("default", "admin", "first")
    assert bytes(row["hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in dump  # only the hash is kept

    code, out, err = await _create(pg_dsn, "--org", "nobody")
    assert code == 2 and out == "" and "'nobody' does not exist" in err
