"""The run registry: runs and their attempts. Handlers open the transaction and pass the connection in.

A run's attempts each keep their own state, times, exit code and reason (`run_attempts`); the run row keeps the
run's overall state and the newest attempt's number. An attempt that ends failed, timed_out or lost while the run
has retries left does not end the run: the run goes back to `queued` for its next attempt, whose launch the
scheduler publishes after a backoff (see `apply_state`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ame.domain import (
    TERMINAL_STATES,
    Run,
    RunAttempt,
    RunSpec,
    RunState,
    TriggerKind,
    is_forward_transition,
    retry_follows,
)
from ame_platform.db import Connection


class NotFound(LookupError):
    pass


_COLUMNS = """id, organisation_id, spec, state, attempt, exit_code, reason, trigger, parent_run_id, started_by,
              created_at, started_at, finished_at, updated_at"""

_INSERT = f"""
INSERT INTO runs (id, organisation_id, project, task, spec, state, trigger, parent_run_id, idempotency_key,
                  launch_command, started_by)
VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10)
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
  AND ($9::uuid IS NULL OR parent_run_id = $9)
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
    -- From attempt 2 on, the run's reason is the retry's note until its new attempt moves: then it is that attempt's.
    reason = CASE WHEN state = ANY($8::text[]) AND ($5 <> '' OR attempt > 1) THEN $5 ELSE reason END,
    started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $6) ELSE started_at END,
    finished_at = CASE WHEN state = ANY($8::text[]) AND $3 = ANY($7::text[]) THEN $6 ELSE finished_at END,
    updated_at = now()
WHERE id = $1 AND attempt = $2
  AND (state = ANY($8::text[]) OR ($3 = 'running' AND started_at IS NULL))
RETURNING {_COLUMNS}
"""


# The attempt's own record, forward-only like the run's ($8: whether the event moves the attempt forward; when it
# does not, only a late start time is recorded).
_APPLY_TO_ATTEMPT = """
UPDATE run_attempts SET
    state = CASE WHEN $8 THEN $3 ELSE state END,
    exit_code = CASE WHEN $8 THEN COALESCE($4, exit_code) ELSE exit_code END,
    reason = CASE WHEN $8 AND $5 <> '' THEN $5 ELSE reason END,
    launcher_id = CASE WHEN $7 <> '' THEN $7 ELSE launcher_id END,
    started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $6) ELSE started_at END,
    finished_at = CASE WHEN $8 AND $3 = ANY($9::text[]) THEN $6 ELSE finished_at END,
    updated_at = now()
WHERE run_id = $1 AND attempt = $2
"""

# The attempt that ended is followed by another: the run waits for it, queued again.
_BEGIN_RETRY = f"""
UPDATE runs SET
    state = 'queued', attempt = $2, exit_code = COALESCE($3, exit_code), reason = $4, finished_at = NULL,
    updated_at = now()
WHERE id = $1
RETURNING {_COLUMNS}
"""

_ATTEMPT_COLUMNS = "attempt, state, exit_code, reason, launcher_id, created_at, started_at, finished_at"


@dataclass(frozen=True)
class Applied:
    """What applying a state event did to its run."""

    run: Run
    # Set when the event ended an attempt that another follows: the new attempt's number and its launch command.
    retry_attempt: int | None = None
    retry_launch: bytes | None = None


def _row_to_attempt(row: asyncpg.Record) -> RunAttempt:
    return RunAttempt(
        attempt=row["attempt"],
        state=RunState(row["state"]),
        exit_code=row["exit_code"],
        reason=row["reason"],
        launcher_id=row["launcher_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


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
    launch_command: bytes | None = None,
    started_by: str = "",
) -> tuple[Run, bool]:
    """Insert a queued run and its first attempt; with an idempotency key already used, returns the existing run
    and False. `launch_command` (the first attempt's) is kept to make the command of each retry from."""
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
        launch_command,
        started_by,
    )
    if row is not None:
        await conn.execute(
            "INSERT INTO run_attempts (run_id, attempt, state, created_at) VALUES ($1, 1, 'queued', $2)",
            row["id"],
            row["created_at"],
        )
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
    """The run with all its attempts, if it belongs to `organisation` (NotFound otherwise)."""
    run = await find_run(conn, run_id, organisation=organisation)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    rows = await conn.fetch(
        f"SELECT {_ATTEMPT_COLUMNS} FROM run_attempts WHERE run_id = $1 ORDER BY attempt", uuid.UUID(run.id)
    )
    return run.model_copy(update={"attempts": tuple(_row_to_attempt(r) for r in rows)})


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
    parent_run_id: str | None = None,
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
        _parse_id(parent_run_id) if parent_run_id else None,
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
    launcher_id: str = "",
) -> Applied | None:
    """Move attempt `attempt` of the run to `state` if that is a forward transition, and the run with it when it is
    the run's newest attempt. Returns what changed, or None when nothing did (a stale or repeated event).

    An attempt that ends failed, timed_out or lost while the run has retries left does not end the run: the run
    goes back to `queued` for attempt n+1 (recorded here, queued), and the result carries the launch command of
    that attempt, for the scheduler to publish after its backoff. A `running` event that arrives after its attempt
    ended (events are applied concurrently) still records the start time, and changes nothing else."""
    parsed = _parse_id(run_id)
    if parsed is None:
        return None
    async with conn.transaction():
        # The run's row lock orders the events of one run, whichever attempt they are for.
        run_row = await conn.fetchrow(
            """SELECT attempt, COALESCE((spec->>'retries')::int, 0) AS retries, launch_command
               FROM runs WHERE id = $1 FOR UPDATE""",
            parsed,
        )
        if run_row is None:
            return None
        current = await conn.fetchrow(
            "SELECT state, started_at FROM run_attempts WHERE run_id = $1 AND attempt = $2", parsed, attempt
        )
        if current is None:
            return None
        moves = is_forward_transition(RunState(current["state"]), state)
        if not moves and not (state == RunState.RUNNING and current["started_at"] is None):
            return None
        terminal = [s.value for s in TERMINAL_STATES]
        await conn.execute(
            _APPLY_TO_ATTEMPT, parsed, attempt, state.value, exit_code, reason, at, launcher_id, moves, terminal
        )
        newest = attempt == run_row["attempt"]
        launch = run_row["launch_command"]
        if newest and moves and launch is not None and retry_follows(state, attempt, run_row["retries"]):
            following = attempt + 1
            await conn.execute(
                """INSERT INTO run_attempts (run_id, attempt, state) VALUES ($1, $2, 'queued')
                   ON CONFLICT DO NOTHING""",
                parsed,
                following,
            )
            code = f" with exit code {exit_code}" if exit_code is not None else ""
            note = f"retrying (attempt {following} of {1 + run_row['retries']}): attempt {attempt} {state.value}{code}"
            row = await conn.fetchrow(_BEGIN_RETRY, parsed, following, exit_code, note)
            assert row is not None
            return Applied(_row_to_run(row), retry_attempt=following, retry_launch=bytes(launch))
        if newest:
            replaceable = [s.value for s in RunState if not s.terminal and s.rank < state.rank]
            row = await conn.fetchrow(
                _APPLY_STATE, parsed, attempt, state.value, exit_code, reason, at, terminal, replaceable
            )
        else:
            # An older attempt's late start: the run started when its first attempt did.
            row = await conn.fetchrow(
                f"""UPDATE runs SET started_at = COALESCE(started_at, $2) WHERE id = $1 AND $3 RETURNING {_COLUMNS}""",
                parsed,
                at,
                state == RunState.RUNNING,
            )
        return Applied(_row_to_run(row)) if row is not None else None


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


async def get_outbox(conn: Connection, outbox_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, msg_id, subject, payload, headers FROM outbox WHERE id = $1", outbox_id)


async def find_by_idempotency_key(conn: Connection, *, organisation: str, key: str) -> Run | None:
    """The run submitted with `key` in the organisation, if any."""
    row = await conn.fetchrow(_GET_BY_IDEMPOTENCY_KEY, organisation, key)
    return _row_to_run(row) if row is not None else None
