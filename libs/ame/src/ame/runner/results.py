"""What a local run produced: per-step results and the run's overall result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RunResult", "RunState", "StepResult"]

RunState = Literal["succeeded", "failed", "cancelled", "timed_out", "skipped"]


@dataclass(frozen=True)
class StepResult:
    name: str
    state: RunState
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    attempts: int = 0
    artifacts: tuple[str, ...] = ()

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class RunResult:
    run_id: str
    project: str
    task: str
    state: RunState
    exit_code: int
    started_at: float
    finished_at: float
    artifact_prefix: str
    steps: list[StepResult] = field(default_factory=list)
    reason: str | None = None

    @property
    def artifacts(self) -> list[str]:
        return sorted({key for step in self.steps for key in step.artifacts})
