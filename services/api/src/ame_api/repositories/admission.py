"""Admission bookkeeping: organisation limits, the queue of waiting runs, the slots admitted runs hold, turns.

Every function that decides (reads usage, admits) runs in a transaction that holds `lock_admission`, so the
admission steps of all api replicas are one after another and limits hold whatever the number of replicas.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from ame.domain import TERMINAL_STATES
from ame.domain.quotas import OrganisationLimits
from ame_platform.db import Connection

# Any constant works; it only has to be the same in every api replica (and differ from the migrations' key).
_ADMISSION_LOCK_KEY = 0x616D6561646D  # "ameadm"


@dataclass(frozen=True)
class Waiting:
    """A run in the admission queue."""

    seq: int
    run_id: str
    organisation: str
    loop: str
    gpus: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    reason: str
    state: str


@dataclass(frozen=True)
class Slot:
    organisation: str
    loop: str
    runs: int
    gpus: int


async def lock_admission(conn: Connection) -> None:
    """Held until the transaction ends; taken first, before any row lock, so it never joins a deadlock."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMISSION_LOCK_KEY)


@dataclass(frozen=True)
class Standing:
    """What one submit's admission needs to know, read in one statement."""

    limits: OrganisationLimits | None
    waiting: bool
    anyone_waiting: bool
    total: int
    group_runs: int
    loop_runs: int
    organisation_gpus: int


_STANDING = """
SELECT l.max_runs, l.max_gpus, l.default_timeout_seconds, l.organisation_id IS NOT NULL AS limited,
       EXISTS (SELECT 1 FROM admission_queue WHERE organisation_id = $1 AND loop = $2) AS waiting,
       EXISTS (SELECT 1 FROM admission_queue) AS anyone_waiting,
       s.total, s.group_runs, s.loop_runs, s.organisation_gpus
FROM (SELECT count(*)::int AS total,
             (count(*) FILTER (WHERE organisation_id = $1 AND loop = $2))::int AS group_runs,
             (count(*) FILTER (WHERE loop = $2))::int AS loop_runs,
             COALESCE(sum(gpus) FILTER (WHERE organisation_id = $1), 0)::int AS organisation_gpus
      FROM admissions) s
LEFT JOIN organisation_limits l ON l.organisation_id = $1
"""


async def get_standing(conn: Connection, organisation: str, loop: str) -> Standing:
    row = await conn.fetchrow(_STANDING, organisation, loop)
    assert row is not None
    return Standing(
        limits=_limits(row) if row["limited"] else None,
        waiting=row["waiting"],
        anyone_waiting=row["anyone_waiting"],
        total=row["total"],
        group_runs=row["group_runs"],
        loop_runs=row["loop_runs"],
        organisation_gpus=row["organisation_gpus"],
    )


async def try_lock_admission(conn: Connection) -> bool:
    """The lock if no one holds it, without waiting (so a submit never queues behind a step)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _ADMISSION_LOCK_KEY))


async def list_slots(conn: Connection) -> list[Slot]:
    rows = await conn.fetch(
        """SELECT organisation_id, loop, count(*)::int AS runs, COALESCE(sum(gpus), 0)::int AS gpus
           FROM admissions GROUP BY organisation_id, loop"""
    )
    return [Slot(r["organisation_id"], r["loop"], r["runs"], r["gpus"]) for r in rows]


def _limits(row: asyncpg.Record) -> OrganisationLimits:
    return OrganisationLimits(
        max_runs=row["max_runs"], max_gpus=row["max_gpus"], default_timeout_seconds=row["default_timeout_seconds"]
    )


async def get_limits(conn: Connection, organisations: Iterable[str]) -> dict[str, OrganisationLimits]:
    """Limits by organisation; an organisation without a row has none (absent from the result)."""
    rows = await conn.fetch(
        """SELECT organisation_id, max_runs, max_gpus, default_timeout_seconds FROM organisation_limits
           WHERE organisation_id = ANY($1::text[])""",
        list(organisations),
    )
    return {r["organisation_id"]: _limits(r) for r in rows}


async def organisation_exists(conn: Connection, organisation: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)", organisation))


async def update_limits(conn: Connection, organisation: str, limits: OrganisationLimits) -> None:
    await conn.execute(
        """INSERT INTO organisation_limits (organisation_id, max_runs, max_gpus, default_timeout_seconds)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (organisation_id) DO UPDATE SET max_runs = EXCLUDED.max_runs, max_gpus = EXCLUDED.max_gpus,
               default_timeout_seconds = EXCLUDED.default_timeout_seconds, updated_at = now()""",
        organisation,
        limits.max_runs,
        limits.max_gpus,
        limits.default_timeout_seconds,
    )


async def count_waiting(conn: Connection, organisation: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM admission_queue WHERE organisation_id = $1", organisation))


async def create_waiting(
    conn: Connection,
    *,
    run_id: str,
    organisation: str,
    loop: str,
    gpus: int,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    await conn.execute(
        """WITH waiting AS (
               INSERT INTO admission_queue (run_id, organisation_id, loop, gpus, subject, payload, headers)
               VALUES ($1, $2, $3, $4, $5, $6, $7))
           UPDATE runs SET reason = $8 WHERE id = $1""",
        uuid.UUID(run_id),
        organisation,
        loop,
        gpus,
        subject,
        payload,
        json.dumps(headers),
        reason,
    )


async def find_reason(conn: Connection, run_id: str) -> str:
    return str(await conn.fetchval("SELECT reason FROM runs WHERE id = $1", uuid.UUID(run_id)) or "")


_WAITING_COLUMNS = """q.seq, q.run_id, q.organisation_id, q.loop, q.gpus, q.subject, q.payload, q.headers,
                      r.reason, r.state"""

# The oldest waiting run of each (organisation, loop): a loose index scan, one index probe per group, so a
# queue of 10,000 runs of one organisation costs no more than a queue of one.
_HEADS = f"""
WITH RECURSIVE heads AS (
    (SELECT organisation_id, loop, seq FROM admission_queue ORDER BY organisation_id, loop, seq LIMIT 1)
    UNION ALL
    SELECT next.organisation_id, next.loop, next.seq
    FROM heads h, LATERAL (
        SELECT organisation_id, loop, seq FROM admission_queue q
        WHERE (q.organisation_id, q.loop) > (h.organisation_id, h.loop)
        ORDER BY organisation_id, loop, seq LIMIT 1
    ) next
)
SELECT {_WAITING_COLUMNS}
FROM heads h JOIN admission_queue q ON q.seq = h.seq JOIN runs r ON r.id = q.run_id
"""

_NEXT_IN_GROUP = f"""
SELECT {_WAITING_COLUMNS}
FROM admission_queue q JOIN runs r ON r.id = q.run_id
WHERE q.organisation_id = $1 AND q.loop = $2 AND q.seq > $3
ORDER BY q.seq LIMIT 1
"""


def _waiting(row: asyncpg.Record) -> Waiting:
    return Waiting(
        seq=row["seq"],
        run_id=str(row["run_id"]),
        organisation=row["organisation_id"],
        loop=row["loop"],
        gpus=row["gpus"],
        subject=row["subject"],
        payload=row["payload"],
        headers=json.loads(row["headers"]),
        reason=row["reason"],
        state=row["state"],
    )


async def list_heads(conn: Connection) -> list[Waiting]:
    return [_waiting(r) for r in await conn.fetch(_HEADS)]


async def find_next_waiting(conn: Connection, organisation: str, loop: str, after_seq: int) -> Waiting | None:
    row = await conn.fetchrow(_NEXT_IN_GROUP, organisation, loop, after_seq)
    return _waiting(row) if row is not None else None


async def delete_waiting(conn: Connection, run_id: str) -> None:
    await conn.execute("DELETE FROM admission_queue WHERE run_id = $1", uuid.UUID(run_id))


# One statement: the run takes its slot and its organisation's turn, and its launch enters the outbox, only
# if it is still queued (a cancel may have come first).
_ADMIT = """
WITH run AS (
    UPDATE runs SET admitted_at = clock_timestamp(), reason = '' WHERE id = $1 AND state = 'queued' RETURNING id
), slot AS (
    INSERT INTO admissions (run_id, organisation_id, loop, gpus) SELECT id, $2, $3, $4 FROM run
    ON CONFLICT (run_id) DO NOTHING
), turn AS (
    INSERT INTO admission_turns (organisation_id, last_turn) SELECT $2, nextval('admission_turn_seq') FROM run
    ON CONFLICT (organisation_id) DO UPDATE SET last_turn = EXCLUDED.last_turn
)
INSERT INTO outbox (msg_id, subject, payload, headers) SELECT $5, $6, $7, $8 FROM run RETURNING id
"""


async def create_admission(
    conn: Connection,
    *,
    run_id: str,
    organisation: str,
    loop: str,
    gpus: int,
    msg_id: str,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
) -> int | None:
    """Give a still-queued run its slot and write its launch to the outbox: the outbox id, or None (nothing
    changed) when the run is no longer queued."""
    value = await conn.fetchval(
        _ADMIT, uuid.UUID(run_id), organisation, loop, gpus, msg_id, subject, payload, json.dumps(headers)
    )
    return int(value) if value is not None else None


async def delete_admission(conn: Connection, run_id: str) -> None:
    """The run ended: free its slot, and drop it from the queue if it never left it (cancelled while waiting)."""
    await conn.execute(
        """WITH slot AS (DELETE FROM admissions WHERE run_id = $1)
           DELETE FROM admission_queue WHERE run_id = $1""",
        uuid.UUID(run_id),
    )


async def delete_ended(conn: Connection) -> int:
    """Safety net: slots and queue entries of runs that ended without their end reaching the admission step."""
    terminal = [s.value for s in TERMINAL_STATES]
    freed = await conn.fetchval(
        """WITH d AS (DELETE FROM admissions a USING runs r
                      WHERE r.id = a.run_id AND r.state = ANY($1::text[]) RETURNING 1)
           SELECT count(*) FROM d""",
        terminal,
    )
    dropped = await conn.fetchval(
        """WITH d AS (DELETE FROM admission_queue q USING runs r
                      WHERE r.id = q.run_id AND r.state <> 'queued' RETURNING 1)
           SELECT count(*) FROM d"""
    )
    return int(freed) + int(dropped)


async def list_turns(conn: Connection, organisations: Iterable[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT organisation_id, last_turn FROM admission_turns WHERE organisation_id = ANY($1::text[])",
        list(organisations),
    )
    return {r["organisation_id"]: r["last_turn"] for r in rows}


async def update_reasons(conn: Connection, reasons: Sequence[tuple[str, str]]) -> None:
    """(run id, reason) of runs still waiting; a run that left the queue meanwhile keeps its own."""
    if reasons:
        await conn.executemany(
            "UPDATE runs SET reason = $2 WHERE id = $1 AND state = 'queued' AND admitted_at IS NULL",
            [(uuid.UUID(run_id), reason) for run_id, reason in reasons],
        )


async def set_launch_command(conn: Connection, run_id: str, command: bytes) -> None:
    """The run's first launch command as admitted (with the default timeout it was given)."""
    await conn.execute("UPDATE runs SET launch_command = $2 WHERE id = $1", run_id, command)
