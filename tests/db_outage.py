"""A real PostgreSQL outage for one test's database, without touching the session's other databases.

`ALLOW_CONNECTIONS false` refuses every new connection to the database ("database ... is not currently accepting
connections", as during a restart) and `pg_terminate_backend` closes the open ones mid-operation, as a server
shutting down does. Leaving the block lets connections in again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from ame_platform.embedded import EmbeddedPostgres


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


@asynccontextmanager
async def database_outage(server: EmbeddedPostgres, dsn: str) -> AsyncIterator[None]:
    name = database_name(dsn)
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await terminate_connections(admin, name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def terminate_connections(admin: asyncpg.Connection, name: str) -> int:
    """Close every connection to database `name`; returns how many there were."""
    closed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    return int(closed)
