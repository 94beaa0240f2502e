"""Tasks as the server knows them: those of each project's latest pushed version, with their last run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.runs import Run

# What `ame task list` shows as the status of a task that has no run yet (run states are never this).
NEVER_RUN = "never run"


class TaskSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    organisation: str = "default"
    project: str
    name: str
    project_version_id: str = Field(description="The pushed version the task was read from.")
    last_run: Run | None = Field(None, description="The task's newest run; null when it never ran.")

    @property
    def status(self) -> str:
        """The last run's state, or NEVER_RUN."""
        return self.last_run.state.value if self.last_run is not None else NEVER_RUN
