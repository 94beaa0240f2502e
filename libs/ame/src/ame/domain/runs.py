"""What a run is, independent of any wire format: the spec a client submits and the record the registry keeps.

These are the types REST schemas, the SDK and the services' `convert.py` modules meet on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ame.domain.run_states import RunState


class TriggerKind(StrEnum):
    API = "api"
    CLI = "cli"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    PIPELINE = "pipeline"
    RETRY = "retry"


class EnvVar(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str = Field(min_length=1)
    # `val` is the ame.yml spelling; `value` reads better in JSON. Both are accepted.
    value: str = Field(validation_alias=AliasChoices("value", "val"))


class SecretRef(BaseModel):
    """A reference to a secret; its value is looked up where the run executes and never travels with it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str = Field(min_length=1)
    inject_as: str = Field(min_length=1, validation_alias=AliasChoices("inject_as", "injectAs"))
    vault: str = Field("", description="Empty for AME's own secret store.")


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_millis: int | None = Field(None, ge=1)
    memory_bytes: int | None = Field(None, ge=1)
    storage_bytes: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)


class ExecutorRef(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    kind: str = Field("custom", pattern=r"^(pip|poetry|pipenv|mlflow|custom)$")
    python_version: str = Field("", validation_alias=AliasChoices("python_version", "pythonVersion"))
    image: str = ""


class ArtifactsSpec(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    paths: list[str] = Field(default_factory=list)
    save_changed_files: bool = Field(False, validation_alias=AliasChoices("save_changed_files", "saveChangedFiles"))


class RunSpec(BaseModel):
    """Everything needed to execute a run, wherever it runs."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    project: str = Field("default", min_length=1, max_length=200)
    task: str = Field("adhoc", min_length=1, max_length=200)
    command: str = Field(description="Shell command to run; must not be empty.")
    executor: ExecutorRef = Field(default_factory=ExecutorRef)
    environment: list[EnvVar] = Field(default_factory=list)
    secrets: list[SecretRef] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    timeout_seconds: float | None = Field(None, gt=0)
    retries: int = Field(0, ge=0, le=100)
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    project_version_id: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command must not be empty")
        return value


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
