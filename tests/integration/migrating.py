"""The migrate Job, in the test's own process: starting an interpreter per service to do it costs seconds each."""

from __future__ import annotations

import asyncpg

from ame_platform.db import migrations


async def migrate_services(dsn: str, services: tuple[str, ...]) -> None:
    """What `ame-<service> migrate` does for each service (only the services' migration files are read)."""
    conn = await asyncpg.connect(dsn)
    try:
        for name in services:
            await migrations.apply(conn, name, migrations.load(f"ame_{name}"))
    finally:
        await conn.close()
