"""Webhooks: the hooks each project version declares, which version's hooks answer, and recent deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ame.domain import RunSpec
from ame_api.secrets.cipher import Sealed
from ame_platform.db import Connection

# The column of `projects` naming the version whose triggers are live: the one `ame project push` activated.
# Every query below reads the trigger version through this name (and `trigger_version`), so pointing hooks at
# another notion of the active version is a change here alone.
TRIGGER_VERSION_COLUMN = "active_version_id"


@dataclass(frozen=True)
class Hook:
    organisation: str
    project: str
    task: str
    version_id: str
    secret_name: str
    spec: RunSpec
    # The signing secret's row, read with the hook (find_hook only); None when the store has no such secret.
    sealed: Sealed | None = None


@dataclass(frozen=True)
class Delivery:
    project: str
    task: str
    delivery_id: str
    received_at: datetime
    status: int
    outcome: str
    run_id: str


async def trigger_version(conn: Connection, organisation: str, project: str) -> tuple[str, str] | None:
    """(project id, version id) of the project's trigger version, or None (no such project, or never pushed)."""
    row = await conn.fetchrow(
        f"SELECT id, {TRIGGER_VERSION_COLUMN} AS version_id FROM projects WHERE organisation_id = $1 AND name = $2",
        organisation,
        project,
    )
    if row is None or row["version_id"] is None:
        return None
    return str(row["id"]), str(row["version_id"])


async def add_hooks(
    conn: Connection, *, project_id: str, version_id: str, hooks: Sequence[tuple[str, str, RunSpec]]
) -> None:
    """Record the version's (task, secret name, run spec) hooks, once (a version is immutable)."""
    await conn.executemany(
        """INSERT INTO project_version_webhooks (project_id, version_id, task, secret_name, spec)
           VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING""",
        [(uuid.UUID(project_id), version_id, task, secret, spec.model_dump_json()) for task, secret, spec in hooks],
    )


async def replace_hook_specs(
    conn: Connection, *, project_id: str, version_id: str, hooks: Sequence[tuple[str, str, RunSpec]]
) -> None:
    """The run specs of the version's hooks, resolved again (templates of other projects re-pinned by a push)."""
    await conn.executemany(
        """UPDATE project_version_webhooks SET spec = $4::jsonb
           WHERE project_id = $1 AND version_id = $2 AND task = $3""",
        [(uuid.UUID(project_id), version_id, task, spec.model_dump_json()) for task, _, spec in hooks],
    )


async def find_hook(conn: Connection, *, organisation: str, project: str, task: str) -> Hook | None:
    """The task's hook in the project's trigger version with its signing secret's row; None when there is none.

    One statement whether or not the hook exists, so that an unknown hook is answered in the time a known one is.
    """
    row = await conn.fetchrow(
        f"""SELECT w.version_id, w.secret_name, w.spec, s.ciphertext, s.nonce, s.key_id
            FROM projects p
            JOIN project_version_webhooks w ON w.project_id = p.id AND w.version_id = p.{TRIGGER_VERSION_COLUMN}
            LEFT JOIN secrets s ON s.organisation_id = p.organisation_id AND s.name = w.secret_name
            WHERE p.organisation_id = $1 AND p.name = $2 AND w.task = $3""",
        organisation,
        project,
        task,
    )
    if row is None:
        return None
    sealed = (
        Sealed(bytes(row["ciphertext"]), bytes(row["nonce"]), row["key_id"]) if row["ciphertext"] is not None else None
    )
    spec = RunSpec.model_validate_json(row["spec"])
    return Hook(organisation, project, task, row["version_id"], row["secret_name"], spec, sealed)


async def list_hooks(conn: Connection, *, organisation: str, project: str | None) -> list[Hook]:
    """The hooks of each project's trigger version, by project then task."""
    rows = await conn.fetch(
        f"""SELECT p.name AS project, w.task, w.version_id, w.secret_name, w.spec
            FROM projects p JOIN project_version_webhooks w
              ON w.project_id = p.id AND w.version_id = p.{TRIGGER_VERSION_COLUMN}
            WHERE p.organisation_id = $1 AND ($2::text IS NULL OR p.name = $2)
            ORDER BY p.name, w.task""",
        organisation,
        project,
    )
    return [
        Hook(
            organisation,
            row["project"],
            row["task"],
            row["version_id"],
            row["secret_name"],
            RunSpec.model_validate_json(row["spec"]),
        )
        for row in rows
    ]


async def record_delivery(
    conn: Connection,
    *,
    organisation: str,
    project: str,
    task: str,
    delivery_id: str,
    status: int,
    outcome: str,
    run_id: str | None,
    keep: int,
) -> None:
    """Record one delivery and drop the hook's deliveries older than its newest `keep`."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO webhook_deliveries (organisation_id, project, task, delivery_id, status, outcome, run_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            organisation,
            project,
            task,
            delivery_id,
            status,
            outcome,
            uuid.UUID(run_id) if run_id else None,
        )
        await conn.execute(
            """DELETE FROM webhook_deliveries
               WHERE organisation_id = $1 AND project = $2 AND task = $3
                 AND seq < (SELECT min(seq) FROM (
                     SELECT seq FROM webhook_deliveries WHERE organisation_id = $1 AND project = $2 AND task = $3
                     ORDER BY seq DESC LIMIT $4) AS newest)""",
            organisation,
            project,
            task,
            keep,
        )


async def recent_deliveries(
    conn: Connection, *, organisation: str, hooks: Sequence[tuple[str, str]], per_hook: int
) -> list[Delivery]:
    """The newest `per_hook` deliveries of each (project, task), newest first."""
    if not hooks:
        return []
    rows = await conn.fetch(
        """SELECT d.project, d.task, d.delivery_id, d.received_at, d.status, d.outcome, d.run_id
           FROM unnest($2::text[], $3::text[]) AS h(project, task)
           CROSS JOIN LATERAL (
               SELECT * FROM webhook_deliveries w
               WHERE w.organisation_id = $1 AND w.project = h.project AND w.task = h.task
               ORDER BY w.seq DESC LIMIT $4) AS d
           ORDER BY d.project, d.task, d.seq DESC""",
        organisation,
        [p for p, _ in hooks],
        [t for _, t in hooks],
        per_hook,
    )
    return [
        Delivery(
            project=row["project"],
            task=row["task"],
            delivery_id=row["delivery_id"],
            received_at=row["received_at"],
            status=row["status"],
            outcome=row["outcome"],
            run_id=str(row["run_id"]) if row["run_id"] else "",
        )
        for row in rows
    ]
