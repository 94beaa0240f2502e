"""Which database faults pass, and retrying them, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from ame_platform.db import Connection
from ame_platform.db.retry import retry_transient, with_connection
from ame_platform.embedded import EmbeddedPostgres
from ame_platform.faults import is_transient
from tests.db_outage import database_name, database_outage, terminate_connections
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _raised(operation: Awaitable[object]) -> BaseException:
    try:
        await operation
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


async def test_faults_that_pass_are_told_from_those_that_do_not(postgres_server: EmbeddedPostgres, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1)")
        duplicate = await _raised(conn.execute("INSERT INTO t VALUES (1)"))
        assert isinstance(duplicate, asyncpg.UniqueViolationError)
        assert not is_transient(duplicate)
        bad_data = await _raised(conn.execute("SELECT 'x'::int"))
        assert not is_transient(bad_data)
        missing = await _raised(conn.execute("SELECT * FROM nowhere"))
        assert not is_transient(missing)

        # Terminated while in a query, as by a server restart.
        query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(10)"))
        admin = await asyncpg.connect(postgres_server.dsn())
        try:

            async def sleeping() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%'",
                        database_name(pg_dsn),
                    )
                )

            await wait_until(sleeping, message="the query to run")
            assert await terminate_connections(admin, database_name(pg_dsn)) >= 1
        finally:
            await admin.close()
        terminated = await _raised(query)
        assert is_transient(terminated), repr(terminated)
        closed = await _raised(conn.execute("SELECT 1"))
        assert is_transient(closed), repr(closed)
    finally:
        conn.terminate()

    async with database_outage(postgres_server, pg_dsn):
        refused = await _raised(asyncpg.connect(pg_dsn))
    assert is_transient(refused), repr(refused)


async def test_with_connection_rides_out_an_outage_and_raises_the_rest_at_once(
    postgres_server: EmbeddedPostgres, pg_dsn: str
) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        tries = 0

        async def count(conn: Connection) -> int:
            nonlocal tries
            tries += 1
            return int(await conn.fetchval("SELECT 41 + 1"))

        faults: list[BaseException] = []

        async def on_fault(exc: BaseException) -> None:
            faults.append(exc)

        async with database_outage(postgres_server, pg_dsn):
            pending = asyncio.ensure_future(with_connection(pool, count, what="counting", on_fault=on_fault))
            # Lets the operation meet the outage a few times before the database comes back.
            await wait_until(lambda: len(faults) >= 3, message="the operation to meet the outage")
            assert not pending.done()
        assert await pending == 42
        assert tries >= 1 and all(is_transient(f) for f in faults)

        async def broken(conn: Connection) -> None:
            nonlocal tries
            tries += 1
            await conn.execute("SELECT 'x'::int")

        tries = 0
        error = await _raised(with_connection(pool, broken, what="casting"))
        assert isinstance(error, asyncpg.InvalidTextRepresentationError)
        assert tries == 1

        # A stop flag already set: the passing fault is raised instead of retried.
        stop = asyncio.Event()
        stop.set()
        async with database_outage(postgres_server, pg_dsn):
            stopped = await _raised(with_connection(pool, count, what="counting", stop=stop))
        assert is_transient(stopped)

        # Giving up after a deadline.
        async with database_outage(postgres_server, pg_dsn):
            late = await _raised(retry_transient(lambda: asyncpg.connect(pg_dsn), what="connecting", give_up_after=0.3))
        assert is_transient(late)
    finally:
        await pool.close()
