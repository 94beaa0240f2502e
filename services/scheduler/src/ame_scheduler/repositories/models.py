"""model_trainings: the trainings the scheduler sequences (see ame_scheduler.models)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from ame.domain import new_run_id
from ame_platform.db import Connection


@dataclass(frozen=True)
class Training:
    model_version_id: str
    organisation: str
    training_run_id: str
    validation_run_id: str | None
    request: bytes


def _training(row: asyncpg.Record | None) -> Training:
    assert row is not None
    return Training(
        model_version_id=row["model_version_id"],
        organisation=row["organisation"],
        training_run_id=str(row["training_run_id"]),
        validation_run_id=str(row["validation_run_id"]) if row["validation_run_id"] else None,
        request=bytes(row["request"]),
    )


async def record(
    conn: Connection, *, model_version_id: str, organisation: str, has_validation: bool, request: bytes
) -> Training:
    """The training's row, written on first sight with fresh run ids; a redelivery gets the row it wrote."""
    await conn.execute(
        """INSERT INTO model_trainings (model_version_id, organisation, training_run_id, validation_run_id, request)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_version_id) DO NOTHING""",
        model_version_id,
        organisation,
        uuid.UUID(new_run_id()),
        uuid.UUID(new_run_id()) if has_validation else None,
        request,
    )
    row = await conn.fetchrow("SELECT * FROM model_trainings WHERE model_version_id = $1", model_version_id)
    return _training(row)


async def by_training_run(conn: Connection, run_id: str) -> Training | None:
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    row = await conn.fetchrow("SELECT * FROM model_trainings WHERE training_run_id = $1", key)
    return _training(row) if row is not None else None


async def mark_requested(conn: Connection, *, model_version_id: str, stage: str) -> None:
    column = "training_requested_at" if stage == "train" else "validation_requested_at"
    await conn.execute(
        f"UPDATE model_trainings SET {column} = COALESCE({column}, now()) WHERE model_version_id = $1",
        model_version_id,
    )
