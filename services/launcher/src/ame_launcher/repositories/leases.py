"""Leases on run attempts. Uniqueness of (run_id, attempt) is what makes a launch happen once.

Every statement here is idempotent, because a caller retries it when the database goes away: a statement that
committed before its response was lost runs again and must come to the same result.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ame_platform.db import Connection


@dataclass(frozen=True)
class ExpiredLease:
    run_id: str
    attempt: int
    launcher_id: str
    project: str
    task: str
    host: str | None
    boot_id: str | None
    pgid: int | None
    backend: str = "local"


async def claim_lease(
    conn: Connection,
    *,
    run_id: str,
    attempt: int,
    launcher_id: str,
    backend: str,
    project: str,
    task: str,
    ttl_seconds: float,
) -> bool:
    """True if this launcher now holds the attempt; False if another launcher holds or held it, or if this one
    already finished it.

    Claiming again what this launcher holds is a success (and renews the lease): the first claim may have
    committed while its response was lost, and the retry must then go on to run the attempt, not skip it.
    """
    row = await conn.fetchval(
        """INSERT INTO leases (run_id, attempt, launcher_id, backend, project, task, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
           ON CONFLICT (run_id, attempt) DO UPDATE
               SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at
               WHERE leases.launcher_id = EXCLUDED.launcher_id AND leases.state = 'active'
           RETURNING 1""",
        uuid.UUID(run_id),
        attempt,
        launcher_id,
        backend,
        project,
        task,
        ttl_seconds,
    )
    return row is not None


async def update_process(conn: Connection, *, run_id: str, attempt: int, host: str, boot_id: str, pgid: int) -> None:
    await conn.execute(
        "UPDATE leases SET host = $3, boot_id = $4, pgid = $5 WHERE run_id = $1 AND attempt = $2",
        uuid.UUID(run_id),
        attempt,
        host,
        boot_id,
        pgid,
    )


async def finish_lease(conn: Connection, *, run_id: str, attempt: int, launcher_id: str, final_state: str) -> bool:
    """Finish the attempt's lease if `launcher_id` still holds it; False when another launcher took it over (or it
    was finished already: a repeated finish keeps the first one's time and state)."""
    row = await conn.fetchval(
        """UPDATE leases SET state = 'finished', finished_at = now(), final_state = $3
           WHERE run_id = $1 AND attempt = $2 AND state = 'active' AND launcher_id = $4
           RETURNING 1""",
        uuid.UUID(run_id),
        attempt,
        final_state,
        launcher_id,
    )
    return row is not None


async def renew_lease(conn: Connection, *, run_id: str, attempt: int, launcher_id: str, ttl_seconds: float) -> bool:
    """Extend the attempt's lease if `launcher_id` still holds it: the fence before it reports the run's end."""
    row = await conn.fetchval(
        """UPDATE leases SET heartbeat_at = now(), expires_at = now() + make_interval(secs => $4)
           WHERE run_id = $1 AND attempt = $2 AND state = 'active' AND launcher_id = $3
           RETURNING 1""",
        uuid.UUID(run_id),
        attempt,
        launcher_id,
        ttl_seconds,
    )
    return row is not None


async def record_refused(
    conn: Connection, *, run_id: str, attempt: int, launcher_id: str, backend: str, project: str, task: str
) -> None:
    """Record an attempt no launcher could take as finished `failed`, so no later claim can execute it."""
    await conn.execute(
        """INSERT INTO leases (run_id, attempt, launcher_id, backend, project, task, expires_at, state,
                               finished_at, final_state)
           VALUES ($1, $2, $3, $4, $5, $6, now(), 'finished', now(), 'failed')
           ON CONFLICT (run_id, attempt) DO NOTHING""",
        uuid.UUID(run_id),
        attempt,
        launcher_id,
        backend,
        project,
        task,
    )


async def release_unstarted(conn: Connection, *, run_id: str, attempt: int, launcher_id: str) -> None:
    """Give up a lease this launcher claimed and never started, so another launcher can take the attempt."""
    await conn.execute(
        "DELETE FROM leases WHERE run_id = $1 AND attempt = $2 AND launcher_id = $3 AND state = 'active'",
        uuid.UUID(run_id),
        attempt,
        launcher_id,
    )


async def update_heartbeats(
    conn: Connection, *, launcher_id: str, run_ids: list[str], ttl_seconds: float
) -> set[tuple[str, int]]:
    """Extend the active leases this launcher holds on these runs, in one statement; returns the (run, attempt)
    pairs renewed. A held run missing from it is no longer this launcher's (another took its lease over)."""
    rows = await conn.fetch(
        """UPDATE leases SET heartbeat_at = now(), expires_at = now() + make_interval(secs => $2)
           WHERE launcher_id = $1 AND state = 'active' AND run_id = ANY($3::uuid[])
           RETURNING run_id, attempt""",
        launcher_id,
        ttl_seconds,
        [uuid.UUID(r) for r in run_ids],
    )
    return {(str(r["run_id"]), r["attempt"]) for r in rows}


async def claim_expired_leases(
    conn: Connection, *, limit: int, launcher_id: str, held: list[str], backend: str
) -> list[ExpiredLease]:
    """Active leases of `backend` whose holder stopped heartbeating; locked so one reconciler handles each.

    `launcher_id` and `held` are the calling launcher and the runs it holds right now: those are alive whatever
    their expiry says (its own heartbeat may simply not have run yet since the database came back). Leases of
    another backend are left to that backend's launchers: only they can tell whether the work still exists.
    """
    rows = await conn.fetch(
        """SELECT run_id, attempt, launcher_id, project, task, host, boot_id, pgid, backend FROM leases
           WHERE state = 'active' AND expires_at < now() AND backend = $4
             AND NOT (launcher_id = $2 AND run_id = ANY($3::uuid[]))
           ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
        launcher_id,
        [uuid.UUID(r) for r in held],
        backend,
    )
    return [
        ExpiredLease(
            run_id=str(r["run_id"]),
            attempt=r["attempt"],
            launcher_id=r["launcher_id"],
            host=r["host"],
            boot_id=r["boot_id"],
            pgid=r["pgid"],
            project=r["project"],
            task=r["task"],
            backend=r["backend"],
        )
        for r in rows
    ]


async def take_over(conn: Connection, *, run_id: str, attempt: int, launcher_id: str, ttl_seconds: float) -> bool:
    """Make this launcher the holder of an active lease (one it found expired and locked): it adopts the run."""
    row = await conn.fetchval(
        """UPDATE leases SET launcher_id = $3, heartbeat_at = now(), expires_at = now() + make_interval(secs => $4)
           WHERE run_id = $1 AND attempt = $2 AND state = 'active' RETURNING 1""",
        uuid.UUID(run_id),
        attempt,
        launcher_id,
        ttl_seconds,
    )
    return row is not None


async def hand_back(conn: Connection, *, launcher_id: str, run_ids: list[str]) -> None:
    """Expire this launcher's active leases on these runs now, so that another launcher adopts them at once."""
    await conn.execute(
        """UPDATE leases SET expires_at = now() - interval '1 second'
           WHERE launcher_id = $1 AND state = 'active' AND run_id = ANY($2::uuid[])""",
        launcher_id,
        [uuid.UUID(r) for r in run_ids],
    )


async def active_among(conn: Connection, attempts: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Those of `attempts` (run id, attempt) whose lease is still active: a launcher holds or may adopt them."""
    if not attempts:
        return set()
    rows = await conn.fetch(
        """SELECT l.run_id, l.attempt FROM leases AS l
           JOIN unnest($1::uuid[], $2::int[]) AS a(run_id, attempt) ON a.run_id = l.run_id AND a.attempt = l.attempt
           WHERE l.state = 'active'""",
        [uuid.UUID(run_id) for run_id, _ in attempts],
        [attempt for _, attempt in attempts],
    )
    return {(str(r["run_id"]), int(r["attempt"])) for r in rows}
