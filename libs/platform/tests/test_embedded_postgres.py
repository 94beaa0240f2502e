from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ame_platform.embedded import EmbeddedPostgres, EmbeddedServerError
from tests.processes import live_children, pid_alive
from tests.waiting import wait_until

_SERVE_FOREVER = """
import asyncio, sys
from pathlib import Path
from ame_platform.embedded import EmbeddedPostgres

async def main() -> None:
    server = EmbeddedPostgres(Path(sys.argv[1]), fast_unsafe=True)
    await server.start()
    print(server.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's private tmp dir, which the unprivileged server user could not traverse.
    path = Path(tempfile.mkdtemp(prefix="ame-pg-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _fetch_rows(server: EmbeddedPostgres) -> list[str]:
    connection = await asyncpg.connect(server.dsn())
    try:
        return [row["name"] for row in await connection.fetch("SELECT name FROM kept ORDER BY name")]
    finally:
        await connection.close()


async def test_restart_on_the_same_dir_keeps_data(data_dir: Path) -> None:
    async with EmbeddedPostgres(data_dir, fast_unsafe=True) as server:
        connection = await asyncpg.connect(server.dsn())
        await connection.execute("CREATE TABLE kept (name text); INSERT INTO kept VALUES ('a')")
        await connection.close()
        pid = server.pid
    assert pid is not None
    assert not pid_alive(pid)

    async with EmbeddedPostgres(data_dir) as server:
        assert await _fetch_rows(server) == ["a"]


async def test_create_and_drop_database(data_dir: Path) -> None:
    async with EmbeddedPostgres(data_dir, fast_unsafe=True) as server:
        dsn = await server.create_database("t_scratch")
        connection = await asyncpg.connect(dsn)
        assert await connection.fetchval("SELECT current_database()") == "t_scratch"
        # FORCE: a session still connected must not block the drop.
        await server.drop_database("t_scratch")
        assert connection.is_closed() or not await _still_usable(connection)
        with pytest.raises(ValueError, match="identifier"):
            await server.create_database('x"; DROP DATABASE postgres; --')


async def _still_usable(connection: asyncpg.Connection) -> bool:
    try:
        await connection.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_crashed_postmaster_does_not_block_the_next_start(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    await server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: not pid_alive(pid), message="postmaster to die")
    assert (server.pgdata / "postmaster.pid").exists()

    restarted = EmbeddedPostgres(data_dir, fast_unsafe=True)
    await restarted.start()
    try:
        connection = await asyncpg.connect(restarted.dsn())
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
    finally:
        await restarted.stop()
        await server.stop()


async def test_pid_file_naming_a_reused_pid_is_stale(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    await server.start()
    await server.stop()
    # After a container restart the recorded pid often belongs to some unrelated process.
    unrelated = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        (server.pgdata / "postmaster.pid").write_text(f"{unrelated.pid}\n{server.pgdata}\n0\n0\n\n\n\n")
        await server.start()
        assert server.pid not in (None, unrelated.pid)
        await server.stop()
    finally:
        unrelated.kill()
        await unrelated.wait()


async def test_second_server_on_a_running_cluster_is_refused(data_dir: Path) -> None:
    async with EmbeddedPostgres(data_dir, fast_unsafe=True):
        with pytest.raises(EmbeddedServerError, match="already running"):
            await EmbeddedPostgres(data_dir).start()


async def test_sigkill_of_the_parent_takes_postgres_down(data_dir: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE_FOREVER, str(data_dir), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        postmaster_pid = int(await asyncio.wait_for(parent.stdout.readline(), 60))
        # The helpers (checkpointer, walwriter, ...) must go too; postgres makes each its own group leader.
        server_pids = [postmaster_pid, *live_children(postmaster_pid)]
        assert len(server_pids) > 1
    finally:
        # SIGKILL, as an OOM kill or `kill -9` would: the parent runs no cleanup at all.
        parent.send_signal(signal.SIGKILL)
        await parent.wait()

    await wait_until(
        lambda: not any(pid_alive(pid) for pid in server_pids),
        timeout=15,
        message="postgres processes to exit",
    )


@pytest.mark.postgres
async def test_pg_dsn_is_a_fresh_database_per_test(pg_dsn: str) -> None:
    connection = await asyncpg.connect(pg_dsn)
    try:
        assert (await connection.fetchval("SELECT current_database()")).startswith("t_")
        tables = await connection.fetch("SELECT 1 FROM pg_tables WHERE schemaname = 'public'")
        assert tables == []
        await connection.execute("CREATE TABLE mine (id int)")
    finally:
        await connection.close()
