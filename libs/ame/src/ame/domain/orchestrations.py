"""Orchestrations and their tasks (seed 004), as thin names over project versions, runs and schedules.

An orchestration is a ZIP of Python code (`main.py`), kept as a project version of its own project; each upload of
the same name is a new version. Its environment is built once by a packaging run (the launcher's environment cache
then serves every task run). A task is a run-once run or a schedule of that version; a task run is a run.

The seed speaks its own status words; they come from AME's run states through `seed_word`, the one mapping
(shared decision 6: nothing else translates).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.run_states import RunState

__all__ = [
    "ORCHESTRATION_LABEL",
    "ORCHESTRATION_NAME_MAX_CHARS",
    "ORCHESTRATION_TASK_LABEL",
    "RUN_TOKEN_KEY",
    "RUN_TOKEN_VAULT",
    "Orchestration",
    "OrchestrationStatus",
    "OrchestrationTask",
    "TaskKind",
    "TaskRun",
    "TaskStatus",
    "packaging_status",
    "seed_word",
    "states_for_word",
    "task_status",
]

ORCHESTRATION_NAME_MAX_CHARS = 200
# The seed shows `-` for what is not there (a schedule of a run-once task, a file name of a buffer upload).
NONE_SHOWN = "-"
# Labels of the runs an orchestration starts (its packaging runs, its tasks' runs).
ORCHESTRATION_LABEL = "ame.orchestration"
ORCHESTRATION_TASK_LABEL = "ame.orchestration-task"
# A task run's own token (for `ame.Client()` inside the task) reaches it as a secret from this reserved source,
# which the api answers itself when the launcher resolves the run's secrets: minted then, for that run alone.
RUN_TOKEN_VAULT = "ame-run-token"
RUN_TOKEN_KEY = "token"
# The seed's word for a task that has no run yet.
UNKNOWN = "unknown"


class OrchestrationStatus(StrEnum):
    PENDING_PACKAGING = "pending_packaging"
    READY = "ready"
    PACKAGING_FAILED = "packaging_failed"


class TaskStatus(StrEnum):
    """What `task.status()` and `task.kill()` answer (the seed's words)."""

    STARTED = "started"
    PENDING_KILL = "pending_kill"
    KILLED = "killed"
    SUCCESS = "success"
    FAILURE = "failure"


class TaskKind(StrEnum):
    """The seed's task types: `run_once` makes a Temporary Run, `run_scheduled` a Scheduled Run."""

    ONCE = "Temporary Run"
    SCHEDULED = "Scheduled Run"


# The one mapping from AME's run states to the seed's words (docs/architecture.md, "Orchestrations").
_SEED_WORDS: dict[RunState, str] = {
    RunState.QUEUED: "pending",
    RunState.LAUNCHING: "started",
    RunState.RUNNING: "running",
    RunState.SUCCEEDED: "success",
    RunState.FAILED: "failure",
    RunState.TIMED_OUT: "failure",
    RunState.LOST: "failure",
    RunState.CANCELLED: "killed",
}


def seed_word(state: RunState | None) -> str:
    """The seed's word for a run state; `unknown` when there is no run yet."""
    return UNKNOWN if state is None else _SEED_WORDS[state]


SEED_WORDS = tuple(dict.fromkeys(_SEED_WORDS.values()))


def states_for_word(word: str) -> list[RunState] | None:
    """The run states a seed word stands for (`last_runs(status=...)`); None for `all`. ValueError for a word
    that is not one of them."""
    if word in ("", "all"):
        return None
    states = [state for state, seed in _SEED_WORDS.items() if seed == word]
    if not states:
        raise ValueError(f"status {word[:40]!r} is not one of: all, {', '.join(SEED_WORDS)}")
    return states


def packaging_status(state: RunState | None) -> OrchestrationStatus:
    """An orchestration version's status from its packaging run's state (None: not submitted yet)."""
    if state is None or not state.terminal:
        return OrchestrationStatus.PENDING_PACKAGING
    return OrchestrationStatus.READY if state is RunState.SUCCEEDED else OrchestrationStatus.PACKAGING_FAILED


def task_status(*, kind: TaskKind, killed: bool, last_state: RunState | None, any_active: bool) -> TaskStatus:
    """A task's status: a killed task is `pending_kill` while a run of it has not ended, then `killed`; a scheduled
    task is `started` until killed; a run-once task is `started` until its run ends, then `success` or `failure`."""
    if killed:
        return TaskStatus.PENDING_KILL if any_active else TaskStatus.KILLED
    if kind is TaskKind.SCHEDULED or last_state is None or not last_state.terminal:
        return TaskStatus.STARTED
    return TaskStatus.SUCCESS if last_state is RunState.SUCCEEDED else TaskStatus.FAILURE


class Orchestration(BaseModel):
    """One orchestration as `list_orchestrations()` shows it: its newest version's status, file and sha."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: OrchestrationStatus
    filename: str = Field(NONE_SHOWN, description="The uploaded file's name; `-` for a buffer uploaded without one.")
    sha: str = Field(description="sha256 of the uploaded ZIP.")
    project: str = Field(description="The AME project that holds its versions.")
    project_version_id: str
    packaging_run_id: str = ""
    error: str = Field("", description="Why packaging failed (the requirement and the installer's reason).")
    created_at: datetime
    updated_at: datetime


class OrchestrationTask(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    orchestration_id: str
    orchestration: str
    kind: TaskKind
    schedule: str = NONE_SHOWN
    last_run_status: str = UNKNOWN
    status: TaskStatus
    active: bool
    killed: bool
    created_at: datetime
    updated_at: datetime


class TaskRun(BaseModel):
    """One run of a task (the seed's "pod id" is the run id)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    run_id: str
    status: str
    state: RunState
    created_at: datetime
    updated_at: datetime
