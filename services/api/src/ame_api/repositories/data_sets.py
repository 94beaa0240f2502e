"""Data set tables: each version's definitions, one row per production, and the runs waiting for one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.data_sets import DataSetStatus
from ame.domain import RunSpec
from ame.domain.data_sets import DataSetSummary
from ame_platform.db import Connection


@dataclass(frozen=True)
class Definition:
    project: str
    name: str
    path: str
    definition_hash: str
    version_id: str
    producer: RunSpec
    # The declared `size:` in bytes; None: no limit.
    max_bytes: int | None = None


@dataclass(frozen=True)
class DataSetRow:
    id: str
    organisation: str
    project: str
    name: str
    definition_hash: str
    generation: int
    path: str
    status: DataSetStatus
    run_id: str
    version_id: str
    file_count: int
    size_bytes: int
    reason: str
    updated_at: datetime

    def summary(self) -> DataSetSummary:
        return DataSetSummary(
            project=self.project,
            name=self.name,
            status=self.status.value,
            size_bytes=self.size_bytes,
            file_count=self.file_count,
            version_id=self.version_id,
            run_id=self.run_id,
            reason=self.reason,
            path=self.path,
            definition_hash=self.definition_hash,
            generation=self.generation,
            updated_at=self.updated_at,
        )


_COLUMNS = """id, organisation_id, project, name, definition_hash, generation, path, status, run_id, version_id,
              file_count, size_bytes, reason, updated_at"""


def _row(row: asyncpg.Record) -> DataSetRow:
    return DataSetRow(
        id=str(row["id"]),
        organisation=row["organisation_id"],
        project=row["project"],
        name=row["name"],
        definition_hash=row["definition_hash"],
        generation=row["generation"],
        path=row["path"],
        status=DataSetStatus(row["status"]),
        run_id=str(row["run_id"] or ""),
        version_id=row["version_id"] or "",
        file_count=row["file_count"],
        size_bytes=row["size_bytes"],
        reason=row["reason"],
        updated_at=row["updated_at"],
    )


async def add_definitions(conn: Connection, *, project_id: str, definitions: Sequence[Definition]) -> None:
    """Record the data sets a version declares, once (a version is immutable)."""
    await conn.executemany(
        """INSERT INTO project_version_data_sets
               (project_id, version_id, name, path, definition_hash, producer_spec, max_bytes)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT DO NOTHING""",
        [
            (
                uuid.UUID(project_id),
                d.version_id,
                d.name,
                d.path,
                d.definition_hash,
                d.producer.model_dump_json(),
                d.max_bytes,
            )
            for d in definitions
        ],
    )


async def find_definition(
    conn: Connection, *, organisation: str, project: str, name: str, version_id: str | None
) -> Definition | None:
    """The data set as `version_id` of the project declares it, or (None) as its latest pushed version does."""
    row = await conn.fetchrow(
        """SELECT d.version_id, d.path, d.definition_hash, d.producer_spec, d.max_bytes
           FROM projects p JOIN project_version_data_sets d ON d.project_id = p.id
           WHERE p.organisation_id = $1 AND p.name = $2 AND d.name = $3
             AND d.version_id = COALESCE($4::text, p.latest_version_id)""",
        organisation,
        project,
        name,
        version_id,
    )
    if row is None:
        return None
    return Definition(
        project,
        name,
        row["path"],
        row["definition_hash"],
        row["version_id"],
        RunSpec.model_validate_json(row["producer_spec"]),
        row["max_bytes"],
    )


async def find_definition_by_hash(
    conn: Connection, *, organisation: str, project: str, name: str, definition_hash: str
) -> Definition | None:
    """The data set with this definition, as the newest version of the project that declares it so declares it."""
    row = await conn.fetchrow(
        """SELECT d.version_id, d.path, d.definition_hash, d.producer_spec, d.max_bytes
           FROM projects p JOIN project_version_data_sets d ON d.project_id = p.id
           JOIN project_versions v ON v.project_id = d.project_id AND v.id = d.version_id
           WHERE p.organisation_id = $1 AND p.name = $2 AND d.name = $3 AND d.definition_hash = $4
           ORDER BY v.seq DESC LIMIT 1""",
        organisation,
        project,
        name,
        definition_hash,
    )
    if row is None:
        return None
    producer = RunSpec.model_validate_json(row["producer_spec"])
    return Definition(project, name, row["path"], row["definition_hash"], row["version_id"], producer, row["max_bytes"])


async def find_current(
    conn: Connection, *, organisation: str, project: str, name: str, definition_hash: str
) -> DataSetRow | None:
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM data_sets
            WHERE organisation_id = $1 AND project = $2 AND name = $3 AND definition_hash = $4
            ORDER BY generation DESC LIMIT 1""",
        organisation,
        project,
        name,
        definition_hash,
    )
    return _row(row) if row is not None else None


async def has_version(conn: Connection, *, organisation: str, project: str, name: str, version_id: str) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT true FROM data_sets WHERE organisation_id = $1 AND project = $2 AND name = $3
               AND version_id = $4 AND status = 'ready' LIMIT 1""",
            organisation,
            project,
            name,
            version_id,
        )
    )


async def ensure(conn: Connection, *, organisation: str, definition: Definition, fresh: bool = False) -> DataSetRow:
    """The current production of the definition (its newest generation), made `pending` if there is none; with
    `fresh`, a new generation after the newest (a refresh). Locks the row for the transaction."""
    where = (organisation, definition.project, definition.name, definition.definition_hash)
    newest = await conn.fetchval(
        """SELECT max(generation) FROM data_sets
           WHERE organisation_id = $1 AND project = $2 AND name = $3 AND definition_hash = $4""",
        *where,
    )
    generation = (newest or 0) + 1 if fresh or newest is None else newest
    await conn.execute(
        """INSERT INTO data_sets (id, organisation_id, project, name, definition_hash, generation, path, status)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT DO NOTHING""",
        uuid.uuid4(),
        *where,
        generation,
        definition.path,
    )
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM data_sets
            WHERE organisation_id = $1 AND project = $2 AND name = $3 AND definition_hash = $4 AND generation = $5
            FOR UPDATE""",
        *where,
        generation,
    )
    assert row is not None
    return _row(row)


async def run_by_key(conn: Connection, organisation: str, idempotency_key: str) -> str | None:
    found = await conn.fetchval(
        "SELECT id FROM runs WHERE organisation_id = $1 AND idempotency_key = $2", organisation, idempotency_key
    )
    return str(found) if found is not None else None


async def set_run(conn: Connection, data_set_id: str, run_id: str) -> None:
    """The production's run, once (the first submit's run; the idempotency key makes every other submit the same)."""
    await conn.execute(
        "UPDATE data_sets SET run_id = $2, updated_at = now() WHERE id = $1 AND run_id IS NULL",
        uuid.UUID(data_set_id),
        uuid.UUID(run_id),
    )


async def lock(conn: Connection, data_set_ids: Sequence[str]) -> list[DataSetRow]:
    """The rows, locked (shared) so that their production cannot end unseen while a waiter is recorded."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM data_sets WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE",
        [uuid.UUID(i) for i in data_set_ids],
    )
    return [_row(r) for r in rows]


async def add_waiters(conn: Connection, run_id: str, needed: Sequence[tuple[str, str, bool]]) -> None:
    """The (name, data set id, still waiting) productions the run reads."""
    await conn.executemany(
        """INSERT INTO run_data_sets (run_id, data_set_id, name, waiting) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        [(uuid.UUID(run_id), uuid.UUID(i), name, waiting) for name, i, waiting in needed],
    )


async def set_run_reason(conn: Connection, run_id: str, reason: str) -> None:
    await conn.execute("UPDATE runs SET reason = $2 WHERE id = $1 AND state = 'queued'", uuid.UUID(run_id), reason)


async def set_run_command(conn: Connection, run_id: str, command: bytes) -> None:
    await conn.execute("UPDATE runs SET launch_command = $2 WHERE id = $1", uuid.UUID(run_id), command)


async def find_by_run(conn: Connection, run_id: str, *, lock: bool = True) -> DataSetRow | None:
    """The production whose run this is (locked for the transaction unless `lock` is False)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM data_sets WHERE run_id = $1" + (" FOR UPDATE" if lock else ""), uuid.UUID(run_id)
    )
    return _row(row) if row is not None else None


async def update(
    conn: Connection,
    data_set_id: str,
    *,
    status: DataSetStatus,
    reason: str = "",
    version_id: str | None = None,
    file_count: int = 0,
    size_bytes: int = 0,
) -> None:
    await conn.execute(
        """UPDATE data_sets SET status = $2, reason = $3, version_id = COALESCE($4, version_id),
                  file_count = $5, size_bytes = $6, updated_at = now()
           WHERE id = $1""",
        uuid.UUID(data_set_id),
        status.value,
        reason,
        version_id,
        file_count,
        size_bytes,
    )


async def mark_running(conn: Connection, data_set_id: str) -> None:
    await conn.execute(
        "UPDATE data_sets SET status = 'running', updated_at = now() WHERE id = $1 AND status = 'pending'",
        uuid.UUID(data_set_id),
    )


async def stop_waiting(conn: Connection, data_set_id: str) -> list[str]:
    """The runs that were waiting for this (now ready) production and now wait for nothing else (locked).

    Two productions a run waits for may become ready at once, each in its own transaction that sees the other's
    waiter row still waiting: the waiting runs' rows are locked (in id order, so two such transactions never
    deadlock) and what they still wait for is read again in a new statement, whose snapshot (READ COMMITTED) comes
    after the lock, so the transaction that locks second sees the first one's update and releases the run."""
    rows = await conn.fetch(
        "UPDATE run_data_sets SET waiting = false WHERE data_set_id = $1 AND waiting RETURNING run_id",
        uuid.UUID(data_set_id),
    )
    if not rows:
        return []
    run_ids = sorted({r["run_id"] for r in rows})
    await conn.execute("SELECT id FROM runs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", run_ids)
    free = await conn.fetch(
        """SELECT w.id FROM unnest($1::uuid[]) AS w(id)
           WHERE NOT EXISTS (SELECT 1 FROM run_data_sets r WHERE r.run_id = w.id AND r.waiting)
           ORDER BY w.id""",
        run_ids,
    )
    return [str(r["id"]) for r in free]


async def drop_waiters(conn: Connection, data_set_id: str) -> list[str]:
    """The runs that were waiting for this (failed) production, forgotten with everything else they read."""
    rows = await conn.fetch(
        "DELETE FROM run_data_sets WHERE data_set_id = $1 AND waiting RETURNING run_id", uuid.UUID(data_set_id)
    )
    # Their other rows too (one statement cannot delete rows its own CTE deleted, so a second one).
    await conn.execute("DELETE FROM run_data_sets WHERE run_id = ANY($1::uuid[])", [r["run_id"] for r in rows])
    ids = {str(r["run_id"]) for r in rows}
    return sorted(ids)


async def read_by(conn: Connection, run_id: str) -> list[tuple[str, DataSetRow]]:
    """(name, production) of each data set the run reads."""
    rows = await conn.fetch(
        f"""SELECT r.name AS read_as, {", ".join("d." + c.strip() for c in _COLUMNS.split(","))}
            FROM run_data_sets r JOIN data_sets d ON d.id = r.data_set_id WHERE r.run_id = $1 ORDER BY r.name""",
        uuid.UUID(run_id),
    )
    return [(r["read_as"], _row(r)) for r in rows]


async def queued_run(conn: Connection, run_id: str) -> tuple[str, RunSpec, bytes] | None:
    """(organisation, spec, launch command) of the run if it is still queued."""
    row = await conn.fetchrow(
        "SELECT organisation_id, spec, launch_command FROM runs WHERE id = $1 AND state = 'queued' FOR UPDATE",
        uuid.UUID(run_id),
    )
    if row is None or row["launch_command"] is None:
        return None
    return row["organisation_id"], RunSpec.model_validate_json(row["spec"]), bytes(row["launch_command"])


async def list_current(conn: Connection, *, organisation: str, project: str | None) -> list[DataSetRow]:
    """The newest production of each data set (by name), for each project."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (project, name) {_COLUMNS} FROM data_sets
            WHERE organisation_id = $1 AND ($2::text IS NULL OR project = $2)
            ORDER BY project, name, updated_at DESC, generation DESC""",
        organisation,
        project,
    )
    return [_row(r) for r in rows]


async def get(conn: Connection, data_set_id: str) -> DataSetRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM data_sets WHERE id = $1", uuid.UUID(data_set_id))
    return _row(row) if row is not None else None
