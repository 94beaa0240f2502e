"""What a run is, independent of any wire format: the spec a client submits and the record the registry keeps.

These are the types REST schemas, the SDK and the services' `convert.py` modules meet on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from ame.domain.run_states import RunState

# Limits keep every run small enough to travel as one bus message (1 MiB) with room to spare.
MAX_COMMAND_BYTES = 128 * 1024
MAX_ENV_VARS = 500
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_LABELS = 64
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"


def check_text(value: str, what: str) -> str:
    """Refuse text a process environment, PostgreSQL or UTF-8 cannot carry: NUL bytes and lone surrogates."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode text (it holds a lone surrogate)") from None
    return value


class TriggerKind(StrEnum):
    API = "api"
    CLI = "cli"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    PIPELINE = "pipeline"
    RETRY = "retry"


class EnvVar(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str = Field(min_length=1, max_length=256, pattern=_ENV_KEY)
    # `val` is the ame.yml spelling; `value` reads better in JSON. Both are accepted.
    value: str = Field(validation_alias=AliasChoices("value", "val"), max_length=MAX_ENV_VALUE_BYTES)

    @field_validator("value")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value, "an environment value")


class SecretRef(BaseModel):
    """A reference to a secret; its value is looked up where the run executes and never travels with it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str = Field(min_length=1, max_length=1024)
    inject_as: str = Field(
        min_length=1, max_length=256, pattern=_ENV_KEY, validation_alias=AliasChoices("inject_as", "injectAs")
    )
    vault: str = Field("", max_length=256, description="Empty for AME's own secret store.")


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_millis: int | None = Field(None, ge=1)
    memory_bytes: int | None = Field(None, ge=1)
    storage_bytes: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)


class ExecutorRef(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    kind: str = Field("custom", pattern=r"^(pip|poetry|pipenv|mlflow|custom)$")
    python_version: str = Field("", max_length=32, validation_alias=AliasChoices("python_version", "pythonVersion"))
    image: str = Field("", max_length=1024)


class ArtifactsSpec(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    paths: list[str] = Field(default_factory=list, max_length=1000)
    save_changed_files: bool = Field(False, validation_alias=AliasChoices("save_changed_files", "saveChangedFiles"))


class RunSpec(BaseModel):
    """Everything needed to execute a run, wherever it runs."""

    # Unknown fields are refused: a misspelt `comand` or `timeout_second` must not pass silently.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    project: str = Field("default", min_length=1, max_length=200, pattern=_NAME)
    task: str = Field("adhoc", min_length=1, max_length=200, pattern=_NAME)
    command: str = Field(description="Shell command to run; must not be empty.", max_length=MAX_COMMAND_BYTES)
    executor: ExecutorRef = Field(default_factory=ExecutorRef)
    environment: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV_VARS)
    secrets: list[SecretRef] = Field(default_factory=list, max_length=MAX_ENV_VARS)
    resources: Resources = Field(default_factory=Resources)
    timeout_seconds: float | None = Field(None, gt=0, le=30 * 86400, allow_inf_nan=False)
    retries: int = Field(0, ge=0, le=100)
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    project_version_id: str = Field("", max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command must not be empty")
        return check_text(value, "command")

    @field_validator("labels")
    @classmethod
    def _small_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if len(key) > 63 or len(label) > 256:
                raise ValueError("label keys are at most 63 characters and values at most 256")
            check_text(key, "a label")
            check_text(label, "a label")
        return value

    @model_validator(mode="after")
    def _whole_size(self) -> RunSpec:
        size = len(self.command.encode()) + sum(len(e.key) + len(e.value.encode()) for e in self.environment)
        if size > 2 * MAX_COMMAND_BYTES:
            raise ValueError(f"the command and environment together are {size} bytes; at most {2 * MAX_COMMAND_BYTES}")
        return self


class Run(BaseModel):
    """A run as the registry knows it."""

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
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
