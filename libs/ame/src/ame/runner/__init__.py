"""The local runner: spawn task commands safely, build their environments, run tasks and pipelines."""

from ame.runner.process import (
    MAX_LINE_BYTES,
    CapturedOutput,
    OutputSink,
    ProcessOutcome,
    ProcessSpec,
    ProcessState,
    StreamName,
    capture_process,
    mask_secrets,
    run_process,
)

__all__ = [
    "MAX_LINE_BYTES",
    "CapturedOutput",
    "OutputSink",
    "ProcessOutcome",
    "ProcessSpec",
    "ProcessState",
    "StreamName",
    "capture_process",
    "mask_secrets",
    "run_process",
]
