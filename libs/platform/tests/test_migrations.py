"""Forward-only migrations against a real PostgreSQL database (a fresh one per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ame_platform.db import migrations
from ame_platform.db.migrations import SchemaError
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

SERVICE = "widgets"
FIRST = "20260101000000_create_widgets.sql"
SECOND = "20260102000000_add_colour.sql"
# No IF NOT EXISTS: applying a file twice fails, so a double apply cannot go unnoticed.
FIRST_SQL = "CREATE TABLE widgets (id bigint PRIMARY KEY);\nINSERT INTO widgets VALUES (1);\n"
SECOND_SQL = "ALTER TABLE widgets ADD COLUMN colour text NOT NULL DEFAULT 'red';\n"


class Package:
    """A throwaway importable package holding `migrations/*.sql`."""

    def __init__(self, root: Path) -> None:
        self.name = f"migtest_{uuid.uuid4().hex[:10]}"
        self.dir = root / self.name / "migrations"
        self.dir.mkdir(parents=True)
        (root / self.name / "__init__.py").write_text("")

    def write(self, filename: str, sql: str) -> None:
        (self.dir / filename).write_text(sql, encoding="utf-8")

    def remove(self, filename: str) -> None:
        (self.dir / filename).unlink()

    def load(self) -> list[migrations.Migration]:
        return migrations.load(self.name)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Package:
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = Package(tmp_path)
    pkg.write(SECOND, SECOND_SQL)
    pkg.write(FIRST, FIRST_SQL)
    (pkg.dir / "README.md").write_text("not a migration")
    return pkg


@pytest_asyncio.fixture(loop_scope="session")
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    yield connection
    await connection.close()


async def test_load_orders_by_version_and_ignores_other_files(package: Package) -> None:
    loaded = package.load()
    assert [(m.version, m.name) for m in loaded] == [
        ("20260101000000", "create_widgets"),
        ("20260102000000", "add_colour"),
    ]
    assert loaded[0].sql == FIRST_SQL


async def test_load_refuses_a_badly_named_sql_file(package: Package) -> None:
    package.write("2026_oops.sql", "SELECT 1;")
    with pytest.raises(SchemaError, match=r"2026_oops\.sql"):
        package.load()


async def test_apply_is_idempotent(conn: asyncpg.Connection, package: Package) -> None:
    loaded = package.load()
    first = await migrations.apply(conn, SERVICE, loaded)
    assert [m.version for m in first] == ["20260101000000", "20260102000000"]
    assert await migrations.apply(conn, SERVICE, loaded) == []
    assert [tuple(r) for r in await conn.fetch("SELECT id, colour FROM widgets")] == [(1, "red")]
    rows = await conn.fetch(
        "SELECT version, name, checksum FROM ame_schema_migrations WHERE service = $1 ORDER BY version", SERVICE
    )
    assert [tuple(r) for r in rows] == [(m.version, m.name, m.checksum) for m in loaded]


async def test_apply_adds_only_new_migrations(conn: asyncpg.Connection, package: Package) -> None:
    package.remove(SECOND)
    assert len(await migrations.apply(conn, SERVICE, package.load())) == 1
    package.write(SECOND, SECOND_SQL)
    applied = await migrations.apply(conn, SERVICE, package.load())
    assert [m.name for m in applied] == ["add_colour"]
    await migrations.check(conn, SERVICE, package.load())


async def test_check_fails_before_apply_naming_the_migrate_command(conn: asyncpg.Connection, package: Package) -> None:
    loaded = package.load()
    with pytest.raises(SchemaError, match=r"2 migration\(s\) not applied.*run `ame-widgets migrate`"):
        await migrations.check(conn, SERVICE, loaded)
    # check() only reads: it must not have created anything.
    assert await conn.fetchval("SELECT to_regclass('ame_schema_migrations')") is None
    await migrations.apply(conn, SERVICE, loaded)
    await migrations.check(conn, SERVICE, loaded)


async def test_check_fails_when_a_newer_migration_ships(conn: asyncpg.Connection, package: Package) -> None:
    await migrations.apply(conn, SERVICE, package.load())
    package.write("20260103000000_add_size.sql", "ALTER TABLE widgets ADD COLUMN size int;")
    with pytest.raises(SchemaError, match=r"20260103000000.*ame-widgets migrate"):
        await migrations.check(conn, SERVICE, package.load())


async def test_services_keep_separate_histories(conn: asyncpg.Connection, package: Package) -> None:
    await migrations.apply(conn, SERVICE, package.load())
    with pytest.raises(SchemaError, match="ame-gadgets migrate"):
        await migrations.check(conn, "gadgets", package.load())
    await migrations.apply(conn, "gadgets", [])
    await migrations.check(conn, "gadgets", [])


async def test_an_edited_applied_migration_is_refused(conn: asyncpg.Connection, package: Package) -> None:
    await migrations.apply(conn, SERVICE, package.load())
    package.write(FIRST, FIRST_SQL + "-- edited after it was applied\n")
    edited = package.load()
    with pytest.raises(SchemaError, match=r"edited afterwards.*20260101000000"):
        await migrations.check(conn, SERVICE, edited)
    with pytest.raises(SchemaError, match="edited afterwards"):
        await migrations.apply(conn, SERVICE, edited)


async def test_an_unknown_applied_version_is_refused(conn: asyncpg.Connection, package: Package) -> None:
    await migrations.apply(conn, SERVICE, package.load())
    package.remove(SECOND)
    older = package.load()
    with pytest.raises(SchemaError, match=r"does not know.*20260102000000"):
        await migrations.check(conn, SERVICE, older)
    with pytest.raises(SchemaError, match="does not know"):
        await migrations.apply(conn, SERVICE, older)


THIRD = "20260103000000_add_size.sql"


async def test_old_code_runs_against_a_newer_compatible_database(conn: asyncpg.Connection, package: Package) -> None:
    """The rolling deploy: the new release's migrate Job has run, an old replica (re)starts."""
    old = package.load()
    await migrations.apply(conn, SERVICE, old)
    package.write(THIRD, "-- ame: compatible\nALTER TABLE widgets ADD COLUMN size int;\n")
    assert [m.name for m in await migrations.apply(conn, SERVICE, package.load())] == ["add_size"]
    await migrations.check(conn, SERVICE, old)  # no error: the old code may serve
    # Its queries still work on the expanded table; an old migrate Job (a rollback) has nothing to do.
    await conn.execute("INSERT INTO widgets (id, colour) VALUES (2, 'blue')")
    assert await migrations.apply(conn, SERVICE, old) == []
    recorded = await conn.fetchval("SELECT min_code FROM ame_schema_migrations WHERE version = '20260103000000'")
    assert recorded == ""


async def test_old_code_refuses_a_newer_breaking_database_clearly(conn: asyncpg.Connection, package: Package) -> None:
    old = package.load()
    await migrations.apply(conn, SERVICE, old)
    package.write(THIRD, "ALTER TABLE widgets DROP COLUMN colour;\n")  # no declaration: breaking
    await migrations.apply(conn, SERVICE, package.load())
    expected = (
        r"widgets: the database has migrations this version does not know and cannot run with: "
        r"20260103000000_add_size \(breaking\)\. This version ships migrations up to 20260102000000: "
        r"deploy a version that ships 20260103000000 or later"
    )
    with pytest.raises(SchemaError, match=expected):
        await migrations.check(conn, SERVICE, old)
    with pytest.raises(SchemaError, match=expected):
        await migrations.apply(conn, SERVICE, old)


async def test_a_contract_migration_allows_the_code_it_names(conn: asyncpg.Connection, package: Package) -> None:
    """`requires`: the release that stopped using a column keeps running while the next one drops it."""
    first_release = package.load()[:1]  # ships FIRST only
    await migrations.apply(conn, SERVICE, package.load())
    package.write(
        THIRD,
        "-- Drops what 20260102000000's code no longer reads.\n-- ame: requires 20260102000000\n"
        "ALTER TABLE widgets DROP COLUMN colour;\n",
    )
    await migrations.apply(conn, SERVICE, package.load())
    await migrations.check(conn, SERVICE, package.load()[:2])  # ships 20260102000000: allowed
    with pytest.raises(SchemaError, match=r"20260103000000_add_size \(requires code that ships 20260102000000\)"):
        await migrations.check(conn, SERVICE, first_release)


async def test_a_database_migrated_before_declarations_counts_as_breaking(
    conn: asyncpg.Connection, package: Package
) -> None:
    # The bookkeeping table as migrate created it before migrations declared their compatibility.
    await conn.execute(
        """CREATE TABLE ame_schema_migrations (service text NOT NULL, version text NOT NULL, name text NOT NULL,
           checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (service, version))"""
    )
    loaded = package.load()
    for m in loaded:
        await conn.execute(m.sql)
        await conn.execute(
            "INSERT INTO ame_schema_migrations (service, version, name, checksum) VALUES ($1, $2, $3, $4)",
            SERVICE,
            m.version,
            m.name,
            m.checksum,
        )
    await migrations.check(conn, SERVICE, loaded)  # reads the old table without writing to it
    with pytest.raises(SchemaError, match=r"20260102000000_add_colour \(breaking\)"):
        await migrations.check(conn, SERVICE, loaded[:1])
    assert await migrations.apply(conn, SERVICE, loaded) == []  # adds the column, keeps the rows
    assert await conn.fetchval("SELECT count(*) FROM ame_schema_migrations WHERE min_code IS NULL") == 2


@pytest.mark.parametrize(
    ("declaration", "error"),
    [
        ("-- ame: compatibel", r"`-- ame: compatibel` is not one of"),
        ("-- ame: requires 20990101000000", r"requires a later migration"),
        ("-- ame: requires 20251231000000", r"requires 20251231000000, which is not one of this package"),
        ("-- ame: compatible\n-- ame: breaking", r"declares its compatibility more than once"),
    ],
)
async def test_a_bad_declaration_is_refused_at_load(package: Package, declaration: str, error: str) -> None:
    package.write(THIRD, f"{declaration}\nSELECT 1;\n")
    with pytest.raises(SchemaError, match=error):
        package.load()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(conn: asyncpg.Connection, package: Package) -> None:
    package.write("20260103000000_broken.sql", "CREATE TABLE gizmos (id int);\nSELECT no_such_function();\n")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrations.apply(conn, SERVICE, package.load())
    assert await conn.fetchval("SELECT to_regclass('gizmos')") is None
    versions = await conn.fetch("SELECT version FROM ame_schema_migrations WHERE service = $1", SERVICE)
    assert sorted(r["version"] for r in versions) == ["20260101000000", "20260102000000"]
    # The advisory lock was released despite the failure: another session can take it at once.
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", 0x616D65)
    await conn.execute("SELECT pg_advisory_unlock($1)", 0x616D65)


async def test_concurrent_applies_apply_each_file_once(pg_dsn: str, package: Package) -> None:
    loaded = package.load()
    holder, first, second = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        # Hold the migrate lock so both applies are certain to be racing for it at the same moment.
        await holder.execute("SELECT pg_advisory_lock($1)", 0x616D65)
        racers = [
            asyncio.create_task(migrations.apply(first, SERVICE, loaded)),
            asyncio.create_task(migrations.apply(second, SERVICE, loaded)),
        ]

        async def both_waiting() -> bool:
            waiting = await holder.fetchval(
                """SELECT count(*) FROM pg_locks
                   WHERE locktype = 'advisory' AND NOT granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
            )
            return bool(waiting == 2)

        await wait_until(both_waiting, message="both migrate jobs to wait for the lock")
        await holder.execute("SELECT pg_advisory_unlock($1)", 0x616D65)
        results = await asyncio.gather(*racers)
    finally:
        for c in (holder, first, second):
            await c.close()
    assert sorted(len(r) for r in results) == [0, 2]
    async with _connect(pg_dsn) as check_conn:
        assert await check_conn.fetchval("SELECT count(*) FROM widgets") == 1
        assert await check_conn.fetchval("SELECT count(*) FROM ame_schema_migrations") == 2
        await migrations.check(check_conn, SERVICE, loaded)


@asynccontextmanager
async def _connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()
