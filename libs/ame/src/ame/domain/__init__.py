"""Pure domain rules shared by the CLI, the SDK and the services (no I/O)."""

from ame.domain.durations import Duration, DurationError, Timeout, format_duration, parse_duration, parse_timeout
from ame.domain.executors import EXECUTOR_KINDS, ExecutorKind
from ame.domain.ids import new_run_id
from ame.domain.logs import LogEnd, LogLine, LogStreamName
from ame.domain.resources import GPU_RESOURCE, Resources
from ame.domain.run_states import RETRYABLE_STATES, TERMINAL_STATES, RunState, is_forward_transition, retry_follows
from ame.domain.runs import (
    PIPELINE_PARENT_LABEL,
    PIPELINE_STEP_LABEL,
    ArtifactsSpec,
    DataSetRef,
    EnvVar,
    ExecutorRef,
    FileLayer,
    PipelineStage,
    PipelineStep,
    Run,
    RunAttempt,
    RunSpec,
    SecretRef,
    TriggerKind,
)

__all__ = [
    "EXECUTOR_KINDS",
    "GPU_RESOURCE",
    "PIPELINE_PARENT_LABEL",
    "PIPELINE_STEP_LABEL",
    "RETRYABLE_STATES",
    "TERMINAL_STATES",
    "ArtifactsSpec",
    "DataSetRef",
    "Duration",
    "DurationError",
    "EnvVar",
    "ExecutorKind",
    "ExecutorRef",
    "FileLayer",
    "LogEnd",
    "LogLine",
    "LogStreamName",
    "PipelineStage",
    "PipelineStep",
    "Resources",
    "Run",
    "RunAttempt",
    "RunSpec",
    "RunState",
    "SecretRef",
    "Timeout",
    "TriggerKind",
    "format_duration",
    "is_forward_transition",
    "new_run_id",
    "parse_duration",
    "parse_timeout",
    "retry_follows",
]
