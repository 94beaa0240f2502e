"""What a run is, independent of any wire format: the spec a client submits and the record the registry keeps.

These are the types REST schemas, the SDK and the services' `convert.py` modules meet on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from ame.domain.durations import Timeout
from ame.domain.executors import ExecutorKind
from ame.domain.limits import (
    ENV_KEY_PATTERN,
    LOOP_PATTERN,
    MAX_ARTIFACT_PATHS,
    MAX_COMMAND_BYTES,
    MAX_DATA_SETS,
    MAX_ENV_KEY_CHARS,
    MAX_ENV_VALUE_BYTES,
    MAX_ENV_VARS,
    MAX_IMAGE_CHARS,
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_NAME_CHARS,
    MAX_PROJECT_VERSION_ID_CHARS,
    MAX_PYTHON_VERSION_CHARS,
    MAX_RETRIES,
    MAX_SECRET_KEY_CHARS,
    MAX_TASK_ARGS_BYTES,
    MAX_VAULT_CHARS,
    NAME_PATTERN,
    ArtifactPath,
    CleanText,
    check_text,
)
from ame.domain.resources import Resources
from ame.domain.run_states import RunState
from ame.domain.task_args import encode_task_args

__all__ = ["MAX_COMMAND_BYTES", "MAX_ENV_VALUE_BYTES", "MAX_ENV_VARS", "MAX_LABELS", "Resources", "check_text"]

# Every model a client writes refuses unknown fields at every depth: a misspelt `comand` or `kinds` must not
# pass silently. Runs read back from the registry were written by this model, so they always validate.
_STRICT = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class TriggerKind(StrEnum):
    API = "api"
    CLI = "cli"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    PIPELINE = "pipeline"
    RETRY = "retry"
    MODEL = "model"


class EnvVar(BaseModel):
    model_config = _STRICT

    key: str = Field(min_length=1, max_length=MAX_ENV_KEY_CHARS, pattern=ENV_KEY_PATTERN)
    # `val` is the ame.yml spelling; `value` reads better in JSON. Both are accepted.
    value: str = Field(validation_alias=AliasChoices("value", "val"), max_length=MAX_ENV_VALUE_BYTES)

    @field_validator("value")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value, "an environment value")


class SecretRef(BaseModel):
    """A reference to a secret; its value is looked up where the run executes and never travels with it."""

    model_config = _STRICT

    key: CleanText = Field(min_length=1, max_length=MAX_SECRET_KEY_CHARS)
    inject_as: str = Field(
        min_length=1,
        max_length=MAX_ENV_KEY_CHARS,
        pattern=ENV_KEY_PATTERN,
        validation_alias=AliasChoices("inject_as", "injectAs"),
    )
    vault: CleanText = Field("", max_length=MAX_VAULT_CHARS, description="Empty for AME's own secret store.")


class ExecutorRef(BaseModel):
    model_config = _STRICT

    kind: ExecutorKind = ExecutorKind.CUSTOM
    python_version: CleanText = Field(
        "", max_length=MAX_PYTHON_VERSION_CHARS, validation_alias=AliasChoices("python_version", "pythonVersion")
    )
    image: CleanText = Field("", max_length=MAX_IMAGE_CHARS)


class ArtifactsSpec(BaseModel):
    model_config = _STRICT

    paths: list[ArtifactPath] = Field(default_factory=list, max_length=MAX_ARTIFACT_PATHS)
    save_changed_files: bool = Field(False, validation_alias=AliasChoices("save_changed_files", "saveChangedFiles"))


class DataSetRef(BaseModel):
    """A data set the run reads (`dataSets` in ame.yml); an empty project means the run's own project."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)
    project: str = Field("", max_length=MAX_NAME_CHARS, pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def _check_json_text(value: JsonValue) -> None:
    if isinstance(value, str):
        check_text(value, "the task arguments")
    elif isinstance(value, list):
        for item in value:
            _check_json_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, "the task arguments")
            _check_json_text(item)


# A pipeline of more steps than this is refused at submit (each step is a run of its own).
MAX_PIPELINE_STEPS = 500
# Labels the pipeline coordinator gives each step's run: its label in the pipeline, and the parent run's id.
PIPELINE_STEP_LABEL = "ame.pipeline.step"
PIPELINE_PARENT_LABEL = "ame.pipeline.parent"


class FileLayer(BaseModel):
    """The files one attempt of an earlier pipeline step saved (its artifact index), laid over a step's
    working directory before it starts."""

    model_config = _STRICT

    run_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1)


class PipelineStep(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1, max_length=2 * MAX_NAME_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    spec: RunSpec


class PipelineStage(BaseModel):
    """Steps that start together; the next stage starts once every one of them succeeded."""

    model_config = _STRICT

    steps: list[PipelineStep] = Field(min_length=1)


class RunSpec(BaseModel):
    """Everything needed to execute a run, wherever it runs.

    A pipeline run (the parent of its steps' runs) has `pipeline` and no command; its steps are plain runs.
    """

    model_config = _STRICT

    project: str = Field("default", min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)
    task: str = Field("adhoc", min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)
    command: str = Field(
        "",
        description="Shell command to run; must not be empty (but for a pipeline run).",
        max_length=MAX_COMMAND_BYTES,
    )
    executor: ExecutorRef = Field(default_factory=ExecutorRef)
    environment: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV_VARS)
    secrets: list[SecretRef] = Field(default_factory=list, max_length=MAX_ENV_VARS)
    resources: Resources = Field(default_factory=Resources)
    timeout_seconds: Timeout | None = None
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    data_sets: list[DataSetRef] = Field(
        default_factory=list, max_length=MAX_DATA_SETS, validation_alias=AliasChoices("data_sets", "dataSets")
    )
    project_version_id: CleanText = Field("", max_length=MAX_PROJECT_VERSION_ID_CHARS)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    loop: str = Field(
        "",
        max_length=MAX_NAME_CHARS,
        pattern=LOOP_PATTERN,
        description="The admission loop the run queues in (e.g. `metadata`); empty: its organisation's own queue.",
    )
    args: JsonValue = Field(
        None,
        description="Task arguments: any JSON value (a webhook's payload), handed to the process as the file "
        "AME_TASK_ARGS_FILE names and, when small, as AME_TASK_ARGS; null for none.",
    )
    input_run_id: CleanText = Field(
        "",
        max_length=MAX_PROJECT_VERSION_ID_CHARS,
        description="A run of the same organisation whose artifacts are placed in this run's working directory "
        "before it starts (a model's validation run gets its training run's); empty for none.",
    )
    pipeline: list[PipelineStage] = Field(
        default_factory=list,
        description="A pipeline run's stages, in order (each step a run spec of its own); empty for a plain run.",
    )
    layers: list[FileLayer] = Field(
        default_factory=list,
        description="Set by the pipeline coordinator: earlier steps' files, laid over the project version in order.",
    )
    resume_from: str = Field(
        "",
        max_length=64,
        pattern=r"^[0-9a-fA-F-]*$",
        description="A pipeline run resuming this earlier one: the steps that succeeded there are reused.",
    )

    @field_validator("command")
    @classmethod
    def _command_text(cls, value: str) -> str:
        return check_text(value, "command")

    @model_validator(mode="after")
    def _command_or_pipeline(self) -> RunSpec:
        if self.pipeline:
            if self.command.strip():
                raise ValueError("a pipeline run has steps and no command of its own")
            steps = [step for stage in self.pipeline for step in stage.steps]
            if len(steps) > MAX_PIPELINE_STEPS:
                raise ValueError(f"the pipeline has {len(steps)} steps; at most {MAX_PIPELINE_STEPS}")
            names = [step.name for step in steps]
            if len(set(names)) != len(names):
                raise ValueError("every step of a pipeline needs its own name")
            if any(step.spec.pipeline for step in steps):
                raise ValueError("a pipeline step is a plain run (nested pipelines are flattened by the client)")
        elif not self.command.strip():
            raise ValueError("command must not be empty")
        if self.resume_from and not self.pipeline:
            raise ValueError("only a pipeline run resumes another")
        return self

    @field_validator("labels")
    @classmethod
    def _small_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if len(key) > MAX_LABEL_KEY_CHARS or len(label) > MAX_LABEL_VALUE_CHARS:
                raise ValueError(
                    f"label keys are at most {MAX_LABEL_KEY_CHARS} characters and values at most "
                    f"{MAX_LABEL_VALUE_CHARS}"
                )
            check_text(key, "a label")
            check_text(label, "a label")
        return value

    @field_validator("args")
    @classmethod
    def _small_args(cls, value: JsonValue) -> JsonValue:
        # The registry keeps them in jsonb, which holds neither a NUL character nor a lone surrogate.
        _check_json_text(value)
        size = len(encode_task_args(value))
        if size > MAX_TASK_ARGS_BYTES:
            raise ValueError(f"the task arguments are {size} bytes as JSON; at most {MAX_TASK_ARGS_BYTES}")
        return value

    @model_validator(mode="after")
    def _whole_size(self) -> RunSpec:
        size = len(self.command.encode()) + sum(len(e.key) + len(e.value.encode()) for e in self.environment)
        if size > 2 * MAX_COMMAND_BYTES:
            raise ValueError(f"the command and environment together are {size} bytes; at most {2 * MAX_COMMAND_BYTES}")
        return self


class RunAttempt(BaseModel):
    """One attempt of a run. A retry is a new attempt of the same run, with its own state, times, exit code and
    log (the log archive keys output by run and attempt)."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    state: RunState
    exit_code: int | None = None
    reason: str = ""
    launcher_id: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Run(BaseModel):
    """A run as the registry knows it: `state` is the run's overall state (terminal only once its last attempt
    is), `attempt` the newest attempt's number, and `attempts` every attempt so far (filled where one run is
    read, empty in lists)."""

    model_config = ConfigDict(frozen=True)

    id: str
    organisation: str = "default"
    spec: RunSpec
    state: RunState
    attempt: int = 1
    exit_code: int | None = None
    reason: str = ""
    trigger: TriggerKind = TriggerKind.API
    parent_run_id: str = ""
    # Who started it: `token:<token id>` or `trigger:<name>` (a schedule); empty for runs from before tokens.
    started_by: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    attempts: tuple[RunAttempt, ...] = ()


PipelineStep.model_rebuild()
PipelineStage.model_rebuild()
