"""/v1/tasks: the tasks of each project's latest pushed version, with each one's last run (`ame task list`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.limits import NameFilter, PageSize, TaskPageToken
from ame.domain.tasks import TaskSummary
from ame_api.rest.auth import CurrentPrincipal
from ame_api.tasks import TaskService


class TaskList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSummary]
    next_page_token: str = Field("", description="Pass as page_token for the next page; empty on the last.")


def router(tasks: TaskService) -> APIRouter:
    api = APIRouter(prefix="/v1/tasks", tags=["tasks"])

    @api.get(
        "",
        response_model=TaskList,
        summary="List tasks with their last run",
        description="The tasks of each project's latest pushed version, by project name, then in ame.yml order. "
        "`last_run` is null for a task that never ran. An unknown project gives an empty list.",
    )
    async def list_tasks(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query(description="Only this project's tasks.")] = None,
        page_size: Annotated[PageSize | None, Query()] = None,
        page_token: Annotated[TaskPageToken | None, Query()] = None,
    ) -> TaskList:
        page = await tasks.list(principal, project=project, page_size=page_size, page_token=page_token)
        return TaskList(tasks=page.tasks, next_page_token=page.next_page_token)

    return api
