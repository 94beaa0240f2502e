"""Projects, their content-addressed versions and the blobs an organisation holds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import asyncpg

from ame.domain.projects import ManifestEntry, ProjectVersion
from ame_platform.db import Connection

_VERSION_COLUMNS = """v.seq, v.id, v.file_count, v.size_bytes, v.created_at, v.template_pins, p.id AS project_id,
                      p.name AS project, p.organisation_id, v.git_commit"""


def _row_to_version(row: asyncpg.Record) -> ProjectVersion:
    return ProjectVersion(
        id=row["id"],
        project=row["project"],
        organisation=row["organisation_id"],
        file_count=row["file_count"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        git_commit=row["git_commit"] or "",
        template_pins=json.loads(row["template_pins"]) if row["template_pins"] else {},
    )


async def ensure_project(conn: Connection, *, organisation: str, name: str) -> str:
    """The project's id, creating the project on its first push (two first pushes at once get the same row)."""
    await conn.execute(
        "INSERT INTO projects (id, organisation_id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        uuid.uuid4(),
        organisation,
        name,
    )
    value = await conn.fetchval("SELECT id FROM projects WHERE organisation_id = $1 AND name = $2", organisation, name)
    return str(value)


async def find_project_id(conn: Connection, *, organisation: str, name: str) -> str | None:
    value = await conn.fetchval("SELECT id FROM projects WHERE organisation_id = $1 AND name = $2", organisation, name)
    return str(value) if value is not None else None


async def missing_blobs(conn: Connection, *, organisation: str, sha256s: Sequence[str]) -> list[str]:
    """Those of `sha256s` the organisation does not hold, in the order given."""
    held = {
        row["sha256"]
        for row in await conn.fetch(
            "SELECT sha256 FROM project_blobs WHERE organisation_id = $1 AND sha256 = ANY($2::text[])",
            organisation,
            list(sha256s),
        )
    }
    return [sha for sha in dict.fromkeys(sha256s) if sha not in held]


async def add_blob(conn: Connection, *, organisation: str, sha256: str, size: int) -> bool:
    """Record a blob that is whole in the object store; False if it was recorded before."""
    status = await conn.execute(
        "INSERT INTO project_blobs (organisation_id, sha256, size_bytes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        organisation,
        sha256,
        size,
    )
    return bool(status.endswith(" 1"))


async def has_blob(conn: Connection, *, organisation: str, sha256: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM project_blobs WHERE organisation_id = $1 AND sha256 = $2)",
            organisation,
            sha256,
        )
    )


async def add_version(
    conn: Connection,
    *,
    project_id: str,
    version_id: str,
    files: Sequence[ManifestEntry],
    task_names: Sequence[str] = (),
    template_pins: dict[str, str] | None = None,
) -> tuple[ProjectVersion, bool]:
    """Insert the version unless it exists; returns it and whether it was created."""
    manifest = json.dumps([[f.path, f.mode, f.sha256, f.size] for f in files], separators=(",", ":"))
    created = await conn.fetchval(
        """INSERT INTO project_versions (project_id, id, file_count, size_bytes, manifest, task_names, template_pins)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::text[], $7::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
        uuid.UUID(project_id),
        version_id,
        len(files),
        sum(f.size for f in files),
        manifest,
        list(task_names),
        json.dumps(template_pins or {}),
    )
    version = await get_version(conn, project_id=project_id, version_id=version_id)
    assert version is not None
    return version, bool(created)


async def get_version(conn: Connection, *, project_id: str, version_id: str) -> ProjectVersion | None:
    row = await conn.fetchrow(
        f"""SELECT {_VERSION_COLUMNS} FROM project_versions v JOIN projects p ON p.id = v.project_id
            WHERE v.project_id = $1 AND v.id = $2""",
        uuid.UUID(project_id),
        version_id,
    )
    return _row_to_version(row) if row is not None else None


async def get_manifest(conn: Connection, *, project_id: str, version_id: str) -> list[ManifestEntry] | None:
    raw = await conn.fetchval(
        "SELECT manifest FROM project_versions WHERE project_id = $1 AND id = $2", uuid.UUID(project_id), version_id
    )
    if raw is None:
        return None
    return [
        ManifestEntry.model_construct(path=p, mode=m, sha256=s, size=n)  # validated when committed
        for p, m, s, n in json.loads(raw)
    ]


async def list_versions(
    conn: Connection, *, project_id: str, before_seq: int | None, limit: int
) -> list[tuple[int, ProjectVersion]]:
    """Newest first, each with its position (the page token of the next page)."""
    rows = await conn.fetch(
        f"""SELECT {_VERSION_COLUMNS} FROM project_versions v JOIN projects p ON p.id = v.project_id
            WHERE v.project_id = $1 AND ($2::bigint IS NULL OR v.seq < $2)
            ORDER BY v.seq DESC LIMIT $3""",
        uuid.UUID(project_id),
        before_seq,
        limit,
    )
    return [(int(row["seq"]), _row_to_version(row)) for row in rows]


async def mark_latest(conn: Connection, *, project_id: str, version_id: str) -> None:
    """Make the version the project's latest push (its tasks are the ones `ame task list` shows)."""
    await conn.execute(
        "UPDATE projects SET latest_version_id = $2, latest_pushed_at = now() WHERE id = $1",
        uuid.UUID(project_id),
        version_id,
    )


async def latest_version(conn: Connection, *, organisation: str, name: str) -> tuple[str, str] | None:
    """(project id, version id) of the project's latest pushed version (its newest for a project pushed before
    `latest_version_id` existed); None when the organisation has no such project or it has no version."""
    row = await conn.fetchrow(
        """SELECT p.id, COALESCE(p.latest_version_id,
                  (SELECT v.id FROM project_versions v WHERE v.project_id = p.id ORDER BY v.seq DESC LIMIT 1)) AS vid
           FROM projects p WHERE p.organisation_id = $1 AND p.name = $2""",
        organisation,
        name,
    )
    if row is None or row["vid"] is None:
        return None
    return str(row["id"]), str(row["vid"])


async def set_template_pins(conn: Connection, *, project_id: str, version_id: str, pins: dict[str, str]) -> None:
    await conn.execute(
        "UPDATE project_versions SET template_pins = $3::jsonb WHERE project_id = $1 AND id = $2",
        uuid.UUID(project_id),
        version_id,
        json.dumps(pins),
    )
