"""Forward-only SQL migrations, one set per service, applied by an explicit `migrate` command.

Each service ships its migrations as `migrations/<YYYYMMDDHHMMSS>_<name>.sql` inside its package and owns the
tables they create. `apply` runs under an advisory lock, so two migrate jobs started together apply each file
once. A service checks at start that every migration it ships is applied and refuses to run otherwise: schema
changes never happen as a side effect of a replica booting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from ame_platform.db import Connection

_FILE = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same in every process that migrates.
_LOCK_KEY = 0x616D65  # "ame"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS ame_schema_migrations (
    service    text        NOT NULL,
    version    text        NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class SchemaError(RuntimeError):
    """The database schema does not match the migrations this service ships."""


def load(package: str) -> list[Migration]:
    """The migrations in `<package>/migrations`, oldest first."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise SchemaError(f"{package}: migration file {entry.name!r} is not named <YYYYMMDDHHMMSS>_<name>.sql")
    return sorted(found, key=lambda m: m.version)


async def apply(conn: Connection, service: str, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not yet applied, each in its own transaction; returns those applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        applied = await _applied(conn, service)
        _check_history(service, migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO ame_schema_migrations (service, version, name, checksum) VALUES ($1, $2, $3, $4)",
                    service,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def check(conn: Connection, service: str, migrations: list[Migration]) -> None:
    """Raise SchemaError unless exactly the shipped migrations are applied."""
    exists = await conn.fetchval("SELECT to_regclass('ame_schema_migrations') IS NOT NULL")
    applied = await _applied(conn, service) if exists else {}
    _check_history(service, migrations, applied)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise SchemaError(
            f"{service}: {len(missing)} migration(s) not applied ({', '.join(missing)}); run `ame-{service} migrate`"
        )


async def _applied(conn: Connection, service: str) -> dict[str, str]:
    rows = await conn.fetch("SELECT version, checksum FROM ame_schema_migrations WHERE service = $1", service)
    return {row["version"]: row["checksum"] for row in rows}


def _check_history(service: str, migrations: list[Migration], applied: dict[str, str]) -> None:
    shipped = {m.version: m for m in migrations}
    unknown = sorted(set(applied) - set(shipped))
    if unknown:
        raise SchemaError(f"{service}: the database has migrations this version does not know: {unknown}")
    changed = [v for v, checksum in applied.items() if shipped[v].checksum != checksum]
    if changed:
        raise SchemaError(f"{service}: applied migrations were edited afterwards: {sorted(changed)}")
