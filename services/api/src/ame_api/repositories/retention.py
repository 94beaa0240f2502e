"""Queries of the api's retention job: old project versions, unreferenced blobs, runs whose artifacts expire.

Blob removal and the paths that make a blob referenced (recording an upload, committing a version) serialise on
one advisory lock per organisation: retention takes it exclusively while it removes blobs, uploads and commits
share it. A commit then either lands before retention looks (its blobs are referenced, so kept) or after it
(its blobs are gone from `project_blobs`, so the commit is refused as missing blobs and the client uploads them
again); never a version whose blob was removed under it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from ame_platform.db import Connection

_LOCK = "SELECT {fn}(hashtextextended('ame-blobs:' || $1::text, 0))"


async def lock_blobs_shared(conn: Connection, organisation: str) -> None:
    """Inside a transaction: wait while retention removes the organisation's blobs, and hold it off until commit."""
    await conn.execute(_LOCK.format(fn="pg_advisory_xact_lock_shared"), organisation)


async def lock_blobs_exclusive(conn: Connection, organisation: str) -> None:
    """Inside a transaction: no upload or commit of the organisation records or references a blob until commit."""
    await conn.execute(_LOCK.format(fn="pg_advisory_xact_lock"), organisation)


async def organisations(conn: Connection) -> list[str]:
    return [row["id"] for row in await conn.fetch("SELECT id FROM organisations ORDER BY id")]


async def delete_old_versions(conn: Connection, *, organisation: str, before: datetime) -> list[str]:
    """Delete versions created before `before`, except each project's latest and those a run that has not ended,
    or one created since `before`, names. Returns the ids deleted."""
    rows = await conn.fetch(
        """
        DELETE FROM project_versions v
        USING projects p
        WHERE v.project_id = p.id
          AND p.organisation_id = $1
          AND v.created_at < $2
          AND v.id IS DISTINCT FROM p.latest_version_id
          AND NOT EXISTS (
              SELECT 1 FROM runs r
              WHERE r.organisation_id = $1
                AND r.project = p.name
                AND r.spec::jsonb ->> 'project_version_id' = v.id
                AND (r.state IN ('queued', 'launching', 'running') OR r.created_at >= $2)
          )
        RETURNING v.id
        """,
        organisation,
        before,
    )
    return sorted({row["id"] for row in rows})


async def versions_still_held(conn: Connection, *, organisation: str, version_ids: Sequence[str]) -> set[str]:
    """Of `version_ids`, those some project of the organisation still has (a manifest object is shared by them)."""
    rows = await conn.fetch(
        """SELECT DISTINCT v.id FROM project_versions v JOIN projects p ON p.id = v.project_id
           WHERE p.organisation_id = $1 AND v.id = ANY($2::text[])""",
        organisation,
        list(version_ids),
    )
    return {row["id"] for row in rows}


async def unreferenced_blobs(conn: Connection, *, organisation: str, before: datetime, limit: int) -> list[str]:
    """Blobs recorded before `before` that no version of the organisation lists."""
    rows = await conn.fetch(
        """
        WITH referenced AS (
            SELECT DISTINCT e ->> 2 AS sha256
            FROM project_versions v
            JOIN projects p ON p.id = v.project_id
            CROSS JOIN LATERAL jsonb_array_elements(v.manifest) AS e
            WHERE p.organisation_id = $1
        )
        SELECT b.sha256 FROM project_blobs b
        LEFT JOIN referenced r ON r.sha256 = b.sha256
        WHERE b.organisation_id = $1 AND b.created_at < $2 AND r.sha256 IS NULL
        ORDER BY b.sha256
        LIMIT $3
        """,
        organisation,
        before,
        limit,
    )
    return [row["sha256"] for row in rows]


async def forget_blobs(conn: Connection, *, organisation: str, sha256s: Sequence[str]) -> None:
    await conn.execute(
        "DELETE FROM project_blobs WHERE organisation_id = $1 AND sha256 = ANY($2::text[])",
        organisation,
        list(sha256s),
    )


async def runs_past(conn: Connection, *, organisation: str, run_ids: Sequence[str], before: datetime) -> set[str]:
    """Of `run_ids`, those that ended before `before`, or that the registry does not hold (any more)."""
    parsed = {}
    for run_id in run_ids:
        try:
            parsed[uuid.UUID(run_id)] = run_id
        except ValueError:
            continue
    rows = await conn.fetch(
        """SELECT id, finished_at FROM runs WHERE organisation_id = $1 AND id = ANY($2::uuid[])""",
        organisation,
        list(parsed),
    )
    known = {row["id"]: row["finished_at"] for row in rows}
    return {
        text for key, text in parsed.items() if key not in known or (known[key] is not None and known[key] < before)
    }
