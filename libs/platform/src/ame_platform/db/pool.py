"""The asyncpg connection pool."""

from __future__ import annotations

import asyncpg

from ame_platform.settings import PostgresSettings


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn=settings.dsn.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=settings.command_timeout,
    )
    assert pool is not None
    return pool
