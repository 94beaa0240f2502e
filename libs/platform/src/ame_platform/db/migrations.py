"""Forward-only SQL migrations, one set per service, applied by an explicit `migrate` command.

Each service ships its migrations as `migrations/<YYYYMMDDHHMMSS>_<name>.sql` inside its package and owns the
tables they create. `apply` runs under an advisory lock, so two migrate jobs started together apply each file
once. A service checks at start that every migration it ships is applied and refuses to run otherwise: schema
changes never happen as a side effect of a replica booting.

Rolling deploys (expand/contract): the new release's migrate Job runs while replicas of the old release still
serve, and an old replica that restarts then finds migrations it does not know. Each migration declares, in a
comment line of its own, which code may run against a database that has it:

    -- ame: compatible          expand: code that does not know this migration keeps working
    -- ame: requires <version>  contract: only code that ships migration <version> (of the same service) or
                                later works with it, e.g. the release that stopped reading a column this drops
    -- ame: breaking            (the default, when the file says nothing) only code that ships this migration

The declaration is recorded with the migration in `ame_schema_migrations.min_code`, because the old code that
must decide has no copy of the file. An old service accepts a database whose unknown migrations all allow it
and refuses, naming them, one that has any migration that does not.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from ame_platform.db import Connection

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")
_DECLARATION = re.compile(r"^--\s*ame:\s*(?P<what>.*?)\s*$", re.MULTILINE)
_REQUIRES = re.compile(r"^requires\s+(\d{14})$")
# Any constant works; it only has to be the same in every process that migrates.
_LOCK_KEY = 0x616D65  # "ame"
# What `min_code` holds for a compatible migration: no code is too old for it.
_ANY_CODE = ""

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS ame_schema_migrations (
    service    text        NOT NULL,
    version    text        NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);
-- NULL: recorded before migrations declared their compatibility, so treated as breaking.
ALTER TABLE ame_schema_migrations ADD COLUMN IF NOT EXISTS min_code text
"""
# to_jsonb(m) reads min_code where the column exists and gives NULL where an older migrate created the table,
# so check() (which never writes) works on both.
_APPLIED = """
SELECT version, name, checksum, to_jsonb(m) ->> 'min_code' AS min_code
FROM ame_schema_migrations m WHERE service = $1
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def min_code(self) -> str:
        """The oldest code that works with this migration applied: the version of a migration that code must
        ship, or "" for any code (a compatible migration)."""
        declared = [m["what"] for m in _DECLARATION.finditer(self.sql)]
        if len(declared) > 1:
            raise SchemaError(f"migration {self.version}_{self.name} declares its compatibility more than once")
        what = declared[0] if declared else "breaking"
        if what == "compatible":
            return _ANY_CODE
        if what == "breaking":
            return self.version
        requires = _REQUIRES.match(what)
        if requires is None:
            raise SchemaError(
                f"migration {self.version}_{self.name}: `-- ame: {what}` is not one of "
                "`-- ame: compatible`, `-- ame: breaking`, `-- ame: requires <YYYYMMDDHHMMSS>`"
            )
        if requires[1] > self.version:
            raise SchemaError(f"migration {self.version}_{self.name} requires a later migration ({requires[1]})")
        return requires[1]


@dataclass(frozen=True)
class _Applied:
    version: str
    name: str
    checksum: str
    min_code: str


class SchemaError(RuntimeError):
    """The database schema does not match the migrations this service ships."""


def load(package: str) -> list[Migration]:
    """The migrations in `<package>/migrations`, oldest first, with their compatibility declarations checked."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise SchemaError(f"{package}: migration file {entry.name!r} is not named <YYYYMMDDHHMMSS>_<name>.sql")
    found.sort(key=lambda m: m.version)
    versions = {m.version for m in found}
    for migration in found:
        min_code = migration.min_code
        if min_code not in (_ANY_CODE, migration.version) and min_code not in versions:
            raise SchemaError(
                f"{package}: migration {migration.version}_{migration.name} requires {min_code}, "
                "which is not one of this package's migrations"
            )
    return found


async def apply(conn: Connection, service: str, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not yet applied, each in its own transaction; returns those applied now.

    An older migrate job against a database migrated further (a rollback of the code) applies what it lacks
    when the newer migrations allow its code, and refuses like `check` when they do not.
    """
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
                    "INSERT INTO ame_schema_migrations (service, version, name, checksum, min_code)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    service,
                    migration.version,
                    migration.name,
                    migration.checksum,
                    migration.min_code,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def check(conn: Connection, service: str, migrations: list[Migration]) -> None:
    """Raise SchemaError unless every shipped migration is applied and every other applied one allows this code."""
    exists = await conn.fetchval("SELECT to_regclass('ame_schema_migrations') IS NOT NULL")
    applied = await _applied(conn, service) if exists else {}
    newer = _check_history(service, migrations, applied)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise SchemaError(
            f"{service}: {len(missing)} migration(s) not applied ({', '.join(missing)}); run `ame-{service} migrate`"
        )
    if newer:
        log.warning(
            "%s: the database has %d newer migration(s) that this version does not ship but works with: %s",
            service,
            len(newer),
            ", ".join(f"{a.version}_{a.name}" for a in newer),
        )


async def _applied(conn: Connection, service: str) -> dict[str, _Applied]:
    rows = await conn.fetch(_APPLIED, service)
    return {
        row["version"]: _Applied(
            row["version"],
            row["name"],
            row["checksum"],
            row["version"] if row["min_code"] is None else row["min_code"],
        )
        for row in rows
    }


def _check_history(service: str, migrations: list[Migration], applied: dict[str, _Applied]) -> list[_Applied]:
    """Refuse a database this code must not run against; return the applied migrations it does not know."""
    shipped = {m.version: m for m in migrations}
    unknown = [applied[v] for v in sorted(set(applied) - set(shipped))]
    # A migration this code does not ship allows it when it is compatible or requires one this code ships.
    refused = [a for a in unknown if a.min_code != _ANY_CODE and a.min_code not in shipped]
    if refused:
        newest = max(shipped, default="none")
        raise SchemaError(
            f"{service}: the database has migrations this version does not know and cannot run with: "
            + ", ".join(_describe(a) for a in refused)
            + f". This version ships migrations up to {newest}: deploy a version that ships "
            f"{max(a.min_code for a in refused)} or later"
        )
    changed = [v for v, a in applied.items() if v in shipped and shipped[v].checksum != a.checksum]
    if changed:
        raise SchemaError(f"{service}: applied migrations were edited afterwards: {sorted(changed)}")
    return unknown


def _describe(applied: _Applied) -> str:
    if applied.min_code == applied.version:
        return f"{applied.version}_{applied.name} (breaking)"
    return f"{applied.version}_{applied.name} (requires code that ships {applied.min_code})"
