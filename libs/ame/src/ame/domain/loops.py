"""PEACH task loops as the api reports them (`ame loops info`, `initialize_tasks_info()`, REST)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

TaskState = Literal["PENDING", "RUNNING", "FINISHED"]

# The run states a loop counts as a success; every other end (failed, timed_out, cancelled, lost, and a task
# that could not start) is a failure.
SUCCESS = "succeeded"


class LoopExecution(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    project: str
    task: str
    loop: str
    cycle: int
    run_id: str | None
    version: str  # the short commit hash of a git source's version, else the version id's first 12 characters
    version_id: str
    status: str  # "running", or the run's end state
    reason: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None


class LoopTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str
    task: str
    loop: str
    version: str
    state: TaskState
    last_status: str
    last_started_at: datetime | None
    last_duration_seconds: float | None
    successes: int
    failures: int


class LoopsInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    organisation: str
    tasks: list[LoopTask]
    executions: list[LoopExecution]  # oldest first
