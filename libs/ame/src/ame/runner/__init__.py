"""The local runner: spawn task commands safely, build their environments, run tasks and pipelines.

`run_process` is the one spawn point (own process group, streamed output, timeout/cancel with
SIGTERM-grace-SIGKILL to the group). `LocalRunner` runs a resolved task or pipeline on top of it
for both `ame task run -l` and the launcher's local backend.
"""

from ame.runner.artifacts import artifact_prefix
from ame.runner.env_cache import CacheEntry, EnvironmentCache
from ame.runner.executors import PreparedCommand, prepare_command
from ame.runner.home import AmeHome
from ame.runner.interpreters import Interpreter, InterpreterNotFoundError, find_interpreter
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
from ame.runner.results import RunResult, RunState, StepResult
from ame.runner.secret_sources import (
    LocalSecretStore,
    SecretError,
    SecretRequest,
    SecretSource,
    VaultSecretSource,
    resolve_secrets,
    vault_source_from_env,
)
from ame.runner.setup_steps import SetupCancelledError, SetupContext, SetupError
from ame.runner.task_runs import LocalRunner, RunOutput, RunSettings

__all__ = [
    "MAX_LINE_BYTES",
    "AmeHome",
    "CacheEntry",
    "CapturedOutput",
    "EnvironmentCache",
    "Interpreter",
    "InterpreterNotFoundError",
    "LocalRunner",
    "LocalSecretStore",
    "OutputSink",
    "PreparedCommand",
    "ProcessOutcome",
    "ProcessSpec",
    "ProcessState",
    "RunOutput",
    "RunResult",
    "RunSettings",
    "RunState",
    "SecretError",
    "SecretRequest",
    "SecretSource",
    "SetupCancelledError",
    "SetupContext",
    "SetupError",
    "StepResult",
    "StreamName",
    "VaultSecretSource",
    "artifact_prefix",
    "capture_process",
    "find_interpreter",
    "mask_secrets",
    "prepare_command",
    "resolve_secrets",
    "run_process",
    "vault_source_from_env",
]
