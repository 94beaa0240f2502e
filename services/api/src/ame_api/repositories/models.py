"""model_versions: each training of a model, with its state read from its runs."""

from __future__ import annotations

import uuid

import asyncpg

from ame.domain import RunState
from ame.domain.ml_models import ModelVersion, ModelVersionState, version_state
from ame_platform.db import Connection

_SELECT = """
SELECT m.*, t.state AS training_state, v.state AS validation_state
FROM model_versions m
LEFT JOIN runs t ON t.id = m.training_run_id
LEFT JOIN runs v ON v.id = m.validation_run_id
"""


def _version(row: asyncpg.Record) -> ModelVersion:
    training = RunState(row["training_state"]) if row["training_state"] else None
    validation = RunState(row["validation_state"]) if row["validation_state"] else None
    state, reason = version_state(training, validation, has_validation=row["has_validation"])
    if row["failure"] and state in (ModelVersionState.TRAINING, ModelVersionState.VALIDATING):
        state, reason = ModelVersionState.FAILED, row["failure"]
    return ModelVersion(
        id=row["id"],
        organisation=row["organisation_id"],
        project=row["project"],
        model=row["model"],
        number=row["number"],
        project_version_id=row["project_version_id"],
        training_run_id=str(row["training_run_id"] or ""),
        validation_run_id=str(row["validation_run_id"] or ""),
        has_validation=row["has_validation"],
        state=state,
        reason=reason,
        mlflow_version=row["mlflow_version"],
        created_at=row["created_at"],
    )


async def add_version(
    conn: Connection, *, organisation: str, project: str, model: str, project_version_id: str, has_validation: bool
) -> ModelVersion:
    """A new version, numbered after the model's newest (the lock on the model's rows orders concurrent trainings;
    the unique key is the last guard)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 43))", f"{organisation}/{project}/{model}")
    number = await conn.fetchval(
        """SELECT COALESCE(MAX(number), 0) + 1 FROM model_versions
           WHERE organisation_id = $1 AND project = $2 AND model = $3""",
        organisation,
        project,
        model,
    )
    version_id = str(uuid.uuid4())
    await conn.execute(
        """INSERT INTO model_versions (id, organisation_id, project, model, number, project_version_id, has_validation)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        version_id,
        organisation,
        project,
        model,
        number,
        project_version_id,
        has_validation,
    )
    found = await get_version(conn, version_id)
    assert found is not None
    return found


async def get_version(conn: Connection, version_id: str) -> ModelVersion | None:
    row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", version_id)
    return _version(row) if row is not None else None


async def set_run(conn: Connection, *, version_id: str, stage: str, run_id: str) -> None:
    column = "training_run_id" if stage == "train" else "validation_run_id"
    await conn.execute(
        f"UPDATE model_versions SET {column} = $2 WHERE id = $1 AND {column} IS NULL",
        version_id,
        uuid.UUID(run_id),
    )


async def set_mlflow_version(conn: Connection, *, version_id: str, mlflow_version: str) -> None:
    await conn.execute("UPDATE model_versions SET mlflow_version = $2 WHERE id = $1", version_id, mlflow_version)


async def list_versions(
    conn: Connection, *, organisation: str, project: str | None, per_model: int
) -> list[ModelVersion]:
    """The newest `per_model` versions of each model of the organisation (of `project` when given), newest first."""
    rows = await conn.fetch(
        f"""SELECT * FROM ({_SELECT}
                  WHERE m.organisation_id = $1 AND ($2::text IS NULL OR m.project = $2)) s
            WHERE s.number > (SELECT COALESCE(MAX(number), 0) - $3 FROM model_versions x
                              WHERE x.organisation_id = s.organisation_id AND x.project = s.project
                                AND x.model = s.model)
            ORDER BY s.project, s.model, s.number DESC""",
        organisation,
        project,
        per_model,
    )
    return [_version(row) for row in rows]


async def latest_validated(conn: Connection, *, organisation: str, project: str, model: str) -> ModelVersion | None:
    row = await conn.fetchrow(
        _SELECT
        + """ WHERE m.organisation_id = $1 AND m.project = $2 AND m.model = $3
              AND t.state = 'succeeded' AND (NOT m.has_validation OR v.state = 'succeeded')
              ORDER BY m.number DESC LIMIT 1""",
        organisation,
        project,
        model,
    )
    return _version(row) if row is not None else None


async def set_failure(conn: Connection, *, version_id: str, failure: str) -> None:
    await conn.execute("UPDATE model_versions SET failure = $2 WHERE id = $1 AND failure = ''", version_id, failure)
