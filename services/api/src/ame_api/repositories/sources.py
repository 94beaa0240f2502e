"""Git project sources: the rows, and the lease that makes one sync of a source run at a time across replicas.

A claim is one short statement (`FOR UPDATE SKIP LOCKED`, then an update that takes the lease); no transaction
is held while git runs. The lease is real database time (`clock_timestamp()`), renewed while the sync runs; due
times are the platform clock's (simulated in tests), passed in. Every write after a claim names the lease
number it claimed under, so a replica whose lease expired and was taken over writes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ame_platform.db import Connection

_COLUMNS = """id::text AS id, organisation_id, url, branch, path, interval_seconds, secret_name, hook_secret_name,
created_at, state, reason, synced_commit, synced_at, project, version_id, checked_commit, checked_state,
checked_reason, next_sync_at, requested, served, lease_seq,
(lease_until IS NOT NULL AND lease_until > clock_timestamp()) AS syncing"""


class Duplicate(Exception):
    """A source with the same URL, branch and path exists in the organisation."""


@dataclass(frozen=True)
class SourceRow:
    id: str
    organisation: str
    url: str
    branch: str
    path: str
    interval_seconds: float
    secret_name: str
    hook_secret_name: str
    created_at: datetime
    state: str
    reason: str
    synced_commit: str
    synced_at: datetime | None
    project: str
    version_id: str
    checked_commit: str
    checked_state: str
    checked_reason: str
    next_sync_at: datetime
    requested: int
    served: int
    lease_seq: int
    syncing: bool  # a replica holds the lease now: the state shown is Synchronising


def _row(r: asyncpg.Record) -> SourceRow:
    return SourceRow(
        id=r["id"],
        organisation=r["organisation_id"],
        url=r["url"],
        branch=r["branch"],
        path=r["path"],
        interval_seconds=float(r["interval_seconds"]),
        secret_name=r["secret_name"],
        hook_secret_name=r["hook_secret_name"],
        created_at=r["created_at"],
        state=r["state"],
        reason=r["reason"],
        synced_commit=r["synced_commit"],
        synced_at=r["synced_at"],
        project=r["project"],
        version_id=r["version_id"],
        checked_commit=r["checked_commit"],
        checked_state=r["checked_state"],
        checked_reason=r["checked_reason"],
        next_sync_at=r["next_sync_at"],
        requested=int(r["requested"]),
        served=int(r["served"]),
        lease_seq=int(r["lease_seq"]),
        syncing=bool(r["syncing"]),
    )


async def add(
    conn: Connection,
    *,
    organisation: str,
    url: str,
    branch: str,
    path: str,
    interval_seconds: float,
    secret_name: str,
    hook_secret_name: str,
    now: datetime,
) -> SourceRow:
    """A new source, due at once (`requested` 1: its first sync is asked for)."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO project_sources (id, organisation_id, url, branch, path, interval_seconds, secret_name,
                                             hook_secret_name, next_sync_at, requested)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) RETURNING {_COLUMNS}""",
            uuid.uuid4(),
            organisation,
            url,
            branch,
            path,
            interval_seconds,
            secret_name,
            hook_secret_name,
            now,
        )
    except asyncpg.UniqueViolationError:
        raise Duplicate from None
    assert row is not None
    return _row(row)


async def list_sources(conn: Connection, *, organisation: str) -> list[SourceRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM project_sources WHERE organisation_id = $1 ORDER BY url, path, branch", organisation
    )
    return [_row(r) for r in rows]


async def get(conn: Connection, *, organisation: str, source_id: str) -> SourceRow | None:
    try:
        key = uuid.UUID(source_id)
    except ValueError:
        return None
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM project_sources WHERE organisation_id = $1 AND id = $2", organisation, key
    )
    return _row(row) if row is not None else None


async def find_by_url(conn: Connection, *, organisation: str, url: str) -> list[SourceRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM project_sources WHERE organisation_id = $1 AND url = $2 ORDER BY path, branch",
        organisation,
        url,
    )
    return [_row(r) for r in rows]


async def existing_ids(conn: Connection, source_ids: list[str]) -> set[str]:
    """Which of these source ids (of any organisation) still exist."""
    rows = await conn.fetch(
        "SELECT id::text AS id FROM project_sources WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in source_ids]
    )
    return {r["id"] for r in rows}


async def remove(conn: Connection, *, organisation: str, source_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM project_sources WHERE organisation_id = $1 AND id = $2", organisation, uuid.UUID(source_id)
    )
    return str(status).endswith(" 1")


async def request_sync(conn: Connection, *, organisation: str, source_id: str) -> int | None:
    """Ask for a sync now; the request's number (served once `served` reaches it), None for no such source."""
    value = await conn.fetchval(
        """UPDATE project_sources SET requested = requested + 1 WHERE organisation_id = $1 AND id = $2
           RETURNING requested""",
        organisation,
        uuid.UUID(source_id),
    )
    return int(value) if value is not None else None


async def claim(
    conn: Connection, *, owner: str, now: datetime, lease: timedelta, source_id: str | None = None
) -> SourceRow | None:
    """Take the lease of one source due a sync (periodic or asked for) whose lease is free or expired.

    `source_id` narrows the claim to that source (a replica serving `sync` claims it itself when it can).
    The row is returned as claimed: `requested` is what this sync serves, `lease_seq` fences its writes.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            """SELECT id FROM project_sources
               WHERE (next_sync_at <= $1 OR requested > served)
                 AND (lease_until IS NULL OR lease_until < clock_timestamp())
                 AND ($2::uuid IS NULL OR id = $2)
               ORDER BY next_sync_at LIMIT 1 FOR UPDATE SKIP LOCKED""",
            now,
            uuid.UUID(source_id) if source_id else None,
        )
        if row is None:
            return None
        claimed = await conn.fetchrow(
            f"""UPDATE project_sources
                SET lease_owner = $2, lease_until = clock_timestamp() + $3, lease_seq = lease_seq + 1
                WHERE id = $1 RETURNING {_COLUMNS}""",
            row["id"],
            owner,
            lease,
        )
    assert claimed is not None
    return _row(claimed)


async def renew(conn: Connection, *, source_id: str, lease_seq: int, lease: timedelta) -> bool:
    """Extend the lease while the sync runs; False when it was lost (expired and taken, or the source removed)."""
    status = await conn.execute(
        """UPDATE project_sources SET lease_until = clock_timestamp() + $3 WHERE id = $1 AND lease_seq = $2""",
        uuid.UUID(source_id),
        lease_seq,
        lease,
    )
    return str(status).endswith(" 1")


async def hold(conn: Connection, *, claimed: SourceRow) -> bool:
    """Lock the source's row for the caller's transaction if the claim's lease still holds; False when it was lost.

    A sync's side effects outside this table (activating its version) run inside such a transaction: while the row
    is locked no other replica can claim the source (claims skip locked rows), so a replica that stalled past its
    lease and was taken over cannot activate an older commit after the new holder activated a newer one.
    """
    found = await conn.fetchval(
        """SELECT 1 FROM project_sources WHERE id = $1 AND lease_seq = $2 AND lease_until > clock_timestamp()
           FOR UPDATE""",
        uuid.UUID(claimed.id),
        claimed.lease_seq,
    )
    return found is not None


async def active_version(conn: Connection, *, organisation: str, project: str) -> str:
    """The project's active (trigger) version id; empty when it has none."""
    value = await conn.fetchval(
        "SELECT active_version_id FROM projects WHERE organisation_id = $1 AND name = $2", organisation, project
    )
    return str(value) if value is not None else ""


async def set_branch(conn: Connection, *, source_id: str, lease_seq: int, branch: str) -> bool:
    """Record the default branch read from the remote; False when another source already tracks it."""
    try:
        await conn.execute(
            "UPDATE project_sources SET branch = $3 WHERE id = $1 AND lease_seq = $2",
            uuid.UUID(source_id),
            lease_seq,
            branch,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def finish(
    conn: Connection,
    *,
    claimed: SourceRow,
    state: str,
    reason: str,
    next_sync_at: datetime,
    checked: tuple[str, str, str] | None = None,
    synced: tuple[str, datetime, str, str] | None = None,
) -> bool:
    """Record a sync's outcome and free the lease; False when the lease was lost meanwhile (nothing written).

    `synced`: (commit, time, project, version id) when the head is (now) a version. `checked_commit`: the head
    that was judged (a version, no project file, or a broken file) with that judgement's state and reason, so the
    same head is not judged again.
    """
    commit, synced_at, project, version_id = synced if synced else (None, None, None, None)
    checked_commit, checked_state, checked_reason = checked if checked else (None, None, None)
    status = await conn.execute(
        """UPDATE project_sources
           SET state = $3, reason = $4, next_sync_at = $5, served = GREATEST(served, $6),
               checked_commit = COALESCE($7, checked_commit), checked_state = COALESCE($12, checked_state),
               checked_reason = COALESCE($13, checked_reason),
               synced_commit = COALESCE($8, synced_commit), synced_at = COALESCE($9, synced_at),
               project = COALESCE($10, project), version_id = COALESCE($11, version_id),
               lease_owner = '', lease_until = NULL
           WHERE id = $1 AND lease_seq = $2""",
        uuid.UUID(claimed.id),
        claimed.lease_seq,
        state,
        reason[:4000],
        next_sync_at,
        claimed.requested,
        checked_commit,
        commit,
        synced_at,
        project,
        version_id,
        checked_state,
        checked_reason[:4000] if checked_reason is not None else None,
    )
    return str(status).endswith(" 1")


async def release(conn: Connection, *, claimed: SourceRow) -> None:
    """Give the lease back without an outcome (the replica is stopping): the sync is due again at once."""
    await conn.execute(
        "UPDATE project_sources SET lease_owner = '', lease_until = NULL WHERE id = $1 AND lease_seq = $2",
        uuid.UUID(claimed.id),
        claimed.lease_seq,
    )


async def tag_version(conn: Connection, *, organisation: str, project: str, version_id: str, tag: str) -> None:
    """Tag the version with the short commit hash it was synced from."""
    await conn.execute(
        """UPDATE project_versions v SET git_commit = $4 FROM projects p
           WHERE p.id = v.project_id AND p.organisation_id = $1 AND p.name = $2 AND v.id = $3""",
        organisation,
        project,
        version_id,
        tag,
    )
