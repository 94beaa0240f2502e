"""Schedules as the server shows them: a task's cron from its project's trigger version, with its state."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ScheduleSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    organisation: str = "default"
    project: str
    task: str = Field(description="The schedule's name: the task it starts.")
    cron: str
    timezone: str = "UTC"
    catch_up: str = "none"
    overlap: str = "allow"
    jitter_seconds: float = 0.0
    state: str = Field(description="active | paused")
    project_version_id: str = Field(description="The trigger version the schedule comes from.")
    next_fire_times: list[datetime] = Field(default_factory=list, description="The next slots, as instants (UTC).")
    last_run_id: str = ""
    last_run_state: str = ""
    last_run_at: datetime | None = None


class Activation(BaseModel):
    """What activating a project version did: it is the project's trigger version, with these schedules."""

    model_config = ConfigDict(frozen=True)

    project: str
    project_version_id: str
    schedules: list[ScheduleSummary] = Field(default_factory=list)
    triggers_enabled: bool = Field(True, description="False when the file says enableTriggers: false.")
