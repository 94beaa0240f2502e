"""Task use cases shared by REST and gRPC: the tasks of each project's latest pushed version, with their last run."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ame.domain.principals import Principal
from ame.domain.tasks import TaskSummary
from ame_api import organisations
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import tasks as repo
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings
from ame_platform.runtime import Runtime

# A page token is the (project, position) the page ended at; project names hold no '/'.
_TOKEN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,199})/([1-9][0-9]{0,8})$")


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TaskSummary]
    next_page_token: str


class TaskService:
    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings

    async def list(
        self,
        principal: Principal,
        *,
        organisation: str | None = None,
        project: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> TaskPage:
        org = organisations.resolve(principal, organisation)
        limit = min(page_size or self._settings.list_page_size, 1000)
        after = None
        if page_token:
            match = _TOKEN.match(page_token)
            if match is None:
                raise InvalidRequest("page_token is not one this server handed out")
            after = (match[1], int(match[2]))
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_tasks(conn, organisation=org, project=project or None, after=after, limit=limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            runs = await runs_repo.get_runs(conn, [r.last_run_id for r in rows if r.last_run_id], organisation=org)
        tasks = [
            TaskSummary(
                organisation=org,
                project=r.project,
                name=r.task,
                project_version_id=r.version_id,
                last_run=runs.get(r.last_run_id) if r.last_run_id else None,
            )
            for r in rows
        ]
        token = f"{rows[-1].project}/{rows[-1].position}" if more else ""
        return TaskPage(tasks, token)
