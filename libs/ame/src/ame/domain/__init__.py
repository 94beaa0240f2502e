"""Pure domain rules shared by the CLI, the SDK and the services (no I/O)."""

from ame.domain.ids import new_run_id
from ame.domain.logs import LogEnd, LogLine, LogStreamName
from ame.domain.run_states import RETRYABLE_STATES, TERMINAL_STATES, RunState, is_forward_transition, retry_follows
from ame.domain.runs import (
    ArtifactsSpec,
    EnvVar,
    ExecutorRef,
    Resources,
    Run,
    RunAttempt,
    RunSpec,
    SecretRef,
    TriggerKind,
)

__all__ = [
    "RETRYABLE_STATES",
    "TERMINAL_STATES",
    "ArtifactsSpec",
    "EnvVar",
    "ExecutorRef",
    "LogEnd",
    "LogLine",
    "LogStreamName",
    "Resources",
    "Run",
    "RunAttempt",
    "RunSpec",
    "RunState",
    "SecretRef",
    "TriggerKind",
    "is_forward_transition",
    "new_run_id",
    "retry_follows",
]
