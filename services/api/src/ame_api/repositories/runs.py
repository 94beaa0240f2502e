"""The run registry. Handlers open the transaction and pass the connection in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from ame.domain import TERMINAL_STATES, Run, RunSpec, RunState, TriggerKind
from ame_platform.db import Connection


class NotFound(LookupError):
    pass


_COLUMNS = """id, organisation_id, spec, state, attempt, exit_code, reason, trigger, parent_run_id, started_by,
              created_at, started_at, finished_at, updated_at"""

_INSERT = f"""
INSERT INTO runs (id, organisation_id, project, task, spec, state, trigger, parent_run_id, idempotency_key,
                  started_by)
VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9)
ON CONFLICT (organisation_id, idempotency_key) DO NOTHING
RETURNING {_COLUMNS}
"""

# Every read by id names the caller's organisation: another organisation's run is as absent as an unknown id.
_GET = f"SELECT {_COLUMNS} FROM runs WHERE id = $1 AND organisation_id = $2"

_GET_BY_IDEMPOTENCY_KEY = f"SELECT {_COLUMNS} FROM runs WHERE organisation_id = $1 AND idempotency_key = $2"

_LIST = f"""
SELECT {_COLUMNS} FROM runs
WHERE organisation_id = $1
  AND ($2::text IS NULL OR project = $2)
  AND ($3::text IS NULL OR task = $3)
  AND ($4::text[] IS NULL OR state = ANY($4))
  AND ($5::uuid IS NULL OR id < $5)
  AND ($7::uuid IS NULL OR id BETWEEN $7 AND $8)
ORDER BY id DESC
LIMIT $6
"""

# Forward-only: $8 lists the states the new one may replace, so a stale or repeated event changes no state,
# whatever order events arrive in. One exception keeps the record whole: a `running` event that arrives after
# the run already ended (the registry applies events concurrently) still gives the run its start time, and
# changes nothing else. (SET expressions see the row as it was before the update.)
_APPLY_STATE = f"""
UPDATE runs SET
    state = CASE WHEN state = ANY($8::text[]) THEN $3 ELSE state END,
    exit_code = CASE WHEN state = ANY($8::text[]) THEN COALESCE($4, exit_code) ELSE exit_code END,
    reason = CASE WHEN state = ANY($8::text[]) AND $5 <> '' THEN $5 ELSE reason END,
    started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $6) ELSE started_at END,
    finished_at = CASE WHEN state = ANY($8::text[]) AND $3 = ANY($7::text[]) THEN $6 ELSE finished_at END,
    updated_at = now()
WHERE id = $1 AND attempt = $2
  AND (state = ANY($8::text[]) OR ($3 = 'running' AND started_at IS NULL))
RETURNING {_COLUMNS}
"""


def _row_to_run(row: asyncpg.Record) -> Run:
    return Run(
        id=str(row["id"]),
        organisation=row["organisation_id"],
        spec=RunSpec.model_validate_json(row["spec"]),
        state=RunState(row["state"]),
        attempt=row["attempt"],
        exit_code=row["exit_code"],
        reason=row["reason"],
        trigger=TriggerKind(row["trigger"]),
        parent_run_id=str(row["parent_run_id"] or ""),
        started_by=row["started_by"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
    )


async def create_run(
    conn: Connection,
    *,
    run_id: str,
    organisation: str,
    spec: RunSpec,
    trigger: TriggerKind,
    parent_run_id: str,
    idempotency_key: str | None,
    started_by: str = "",
) -> tuple[Run, bool]:
    """Insert a queued run; with an idempotency key already used, returns the existing run and False."""
    row = await conn.fetchrow(
        _INSERT,
        uuid.UUID(run_id),
        organisation,
        spec.project,
        spec.task,
        spec.model_dump_json(),
        trigger.value,
        uuid.UUID(parent_run_id) if parent_run_id else None,
        idempotency_key,
        started_by,
    )
    if row is not None:
        return _row_to_run(row), True
    existing = await conn.fetchrow(_GET_BY_IDEMPOTENCY_KEY, organisation, idempotency_key)
    assert existing is not None
    return _row_to_run(existing), False


def is_run_id(value: str) -> bool:
    return _parse_id(value) is not None


def _parse_id(run_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        return None


async def find_run(conn: Connection, run_id: str, *, organisation: str) -> Run | None:
    parsed = _parse_id(run_id)
    if parsed is None:
        return None
    row = await conn.fetchrow(_GET, parsed, organisation)
    return _row_to_run(row) if row is not None else None


async def get_run(conn: Connection, run_id: str, *, organisation: str) -> Run:
    run = await find_run(conn, run_id, organisation=organisation)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    return run


async def list_runs(
    conn: Connection,
    *,
    organisation: str,
    project: str | None,
    task: str | None,
    states: Sequence[RunState] | None,
    before_id: str | None,
    limit: int,
    id_prefix: str | None = None,
) -> list[Run]:
    """Newest first. `id_prefix` (hex digits, hyphens dropped) keeps the runs whose id starts with it: a range
    of the primary key, so a prefix lookup reads the index, not every id as text."""
    low = high = None
    if id_prefix:
        low, high = uuid.UUID(id_prefix.ljust(32, "0")), uuid.UUID(id_prefix.ljust(32, "f"))
    rows = await conn.fetch(
        _LIST,
        organisation,
        project,
        task,
        [s.value for s in states] if states else None,
        _parse_id(before_id) if before_id else None,
        limit,
        low,
        high,
    )
    return [_row_to_run(row) for row in rows]


async def get_runs(conn: Connection, run_ids: Sequence[str], *, organisation: str) -> dict[str, Run]:
    """The organisation's runs with these ids, by id."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM runs WHERE id = ANY($1::uuid[]) AND organisation_id = $2",
        [uuid.UUID(i) for i in run_ids],
        organisation,
    )
    return {str(row["id"]): _row_to_run(row) for row in rows}


async def apply_state(
    conn: Connection,
    *,
    run_id: str,
    attempt: int,
    state: RunState,
    exit_code: int | None,
    reason: str,
    at: datetime,
) -> Run | None:
    """Move the run to `state` if that is a forward transition; returns the updated run or None.

    A `running` event for a run that moved past it without a start time records the time only."""
    replaceable = [s.value for s in RunState if not s.terminal and s.rank < state.rank]
    parsed = _parse_id(run_id)
    if parsed is None or not replaceable:
        return None
    row = await conn.fetchrow(
        _APPLY_STATE,
        parsed,
        attempt,
        state.value,
        exit_code,
        reason,
        at,
        [s.value for s in TERMINAL_STATES],
        replaceable,
    )
    return _row_to_run(row) if row is not None else None


async def add_outbox(conn: Connection, *, msg_id: str, subject: str, payload: bytes, headers: dict[str, str]) -> int:
    value = await conn.fetchval(
        "INSERT INTO outbox (msg_id, subject, payload, headers) VALUES ($1, $2, $3, $4) RETURNING id",
        msg_id,
        subject,
        payload,
        json.dumps(headers),
    )
    return int(value)


async def delete_outbox(conn: Connection, outbox_id: int) -> None:
    await conn.execute("DELETE FROM outbox WHERE id = $1", outbox_id)


async def claim_outbox(conn: Connection, *, older_than_seconds: float, limit: int) -> list[asyncpg.Record]:
    """Messages whose fast-path publish did not happen; locked so one relay replica handles each."""
    return await conn.fetch(
        """SELECT id, msg_id, subject, payload, headers FROM outbox
           WHERE created_at < now() - make_interval(secs => $1)
           ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""",
        older_than_seconds,
        limit,
    )
