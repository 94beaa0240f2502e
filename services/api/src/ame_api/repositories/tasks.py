"""Tasks as `ame task list` shows them: the tasks of each project's latest pushed version, with their last run."""

from __future__ import annotations

from dataclasses import dataclass

from ame_platform.db import Connection

# A project's latest version is the one pushed last; a project last pushed before that was recorded falls back
# to its newest version. Tasks keep their ame.yml order; the last run is found through runs_project_task_idx.
_LIST = """
SELECT p.name AS project, v.id AS version_id, t.name AS task, t.ord, last.id AS last_run_id
FROM projects p
JOIN LATERAL (
    SELECT pv.id, pv.task_names FROM project_versions pv
    WHERE pv.project_id = p.id
      AND (pv.id = p.latest_version_id OR p.latest_version_id IS NULL)
    ORDER BY pv.seq DESC LIMIT 1
) v ON true
CROSS JOIN LATERAL unnest(v.task_names) WITH ORDINALITY AS t(name, ord)
LEFT JOIN LATERAL (
    SELECT r.id FROM runs r
    WHERE r.organisation_id = p.organisation_id AND r.project = p.name AND r.task = t.name
    ORDER BY r.id DESC LIMIT 1
) last ON true
WHERE p.organisation_id = $1
  AND ($2::text IS NULL OR p.name = $2)
  AND ($3::text IS NULL OR (p.name, t.ord) > ($3::text, $4::bigint))
ORDER BY p.name, t.ord
LIMIT $5
"""


@dataclass(frozen=True)
class TaskRow:
    project: str
    task: str
    version_id: str
    position: int  # the task's place in its ame.yml, from 1
    last_run_id: str | None


async def list_tasks(
    conn: Connection, *, organisation: str, project: str | None, after: tuple[str, int] | None, limit: int
) -> list[TaskRow]:
    """By project name, then in ame.yml order; `after` is the (project, position) the previous page ended at."""
    rows = await conn.fetch(
        _LIST,
        organisation,
        project,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [
        TaskRow(
            project=row["project"],
            task=row["task"],
            version_id=row["version_id"],
            position=int(row["ord"]),
            last_run_id=str(row["last_run_id"]) if row["last_run_id"] is not None else None,
        )
        for row in rows
    ]
