"""A run in the api's registry without going through the api: for tests of other services that need a queued run
no launcher was asked to start (the launch command is theirs to publish, or never published). Written as SQL on
purpose: tests, like services, never import another service's code."""

from __future__ import annotations

import uuid

from ame.domain import RunSpec, new_run_id
from ame_platform.db import Connection


async def insert_queued_run(conn: Connection, spec: RunSpec, organisation: str = "default") -> str:
    run_id = new_run_id()
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO runs (id, organisation_id, project, task, spec, state)
               VALUES ($1, $2, $3, $4, $5, 'queued')""",
            uuid.UUID(run_id),
            organisation,
            spec.project,
            spec.task,
            spec.model_dump_json(),
        )
        await conn.execute(
            "INSERT INTO run_attempts (run_id, attempt, state) VALUES ($1, 1, 'queued')", uuid.UUID(run_id)
        )
    return run_id
