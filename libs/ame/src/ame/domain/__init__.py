"""Pure domain rules shared by the CLI, the SDK and the services (no I/O)."""

from ame.domain.ids import new_run_id
from ame.domain.logs import LogEnd, LogLine, LogStreamName
from ame.domain.run_states import TERMINAL_STATES, RunState, is_forward_transition
from ame.domain.runs import (
    ArtifactsSpec,
    EnvVar,
    ExecutorRef,
    Resources,
    Run,
    RunSpec,
    SecretRef,
    TriggerKind,
)

__all__ = [
    "TERMINAL_STATES",
    "ArtifactsSpec",
    "EnvVar",
    "ExecutorRef",
    "LogEnd",
    "LogLine",
    "LogStreamName",
    "Resources",
    "Run",
    "RunSpec",
    "RunState",
    "SecretRef",
    "TriggerKind",
    "is_forward_transition",
    "new_run_id",
]
