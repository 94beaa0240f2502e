"""The ``ame.yml`` project file as pydantic models (the canonical dialect).

These models describe the file *after* :mod:`ame.spec.normalise` has folded the older
dialects and the shorthand forms into one shape, so every spelling a user may write is
handled in one place and the schema here stays a plain description of the file.

Field names are snake_case; each field's YAML key is its alias (``pythonVersion``,
``injectAs``, ``nvidia.com/gpu``). Models are frozen: a loaded project is a value.

Every model remembers where it was written (see :meth:`SpecModel.source_mark`) so that
problems found later, when references are resolved, still point at a line and column.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ame.domain.durations import Duration, parse_timeout
from ame.domain.executors import ExecutorKind
from ame.domain.limits import MAX_RETRIES
from ame.domain.quantities import parse_bytes, parse_cpu_millis, parse_gpus
from ame.spec.yaml_tree import LocDict, Mark

# What `!mlflow` runs when no command is given: the MLproject in the project directory.
MLFLOW_DEFAULT_COMMAND = "mlflow run ."

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_MAX_NAME = 128


def _check_name(value: str) -> str:
    if not _NAME.match(value) or len(value) > _MAX_NAME:
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '-' and '.', "
            f"starting with a letter or digit, at most {_MAX_NAME} characters"
        )
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name: use letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def _check_schedule(value: str) -> str:
    expression = " ".join(value.split())
    if expression in _CRON_MACROS:
        return expression
    fields = expression.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"{value!r} is not a cron schedule: it needs 5 fields (minute hour day-of-month month "
            "day-of-week), e.g. '0 12 * * *' for every day at 12:00, or a macro such as @daily"
        )
    from croniter import croniter

    if not croniter.is_valid(expression):
        raise ValueError(f"{value!r} is not a valid cron schedule (minute hour day-of-month month day-of-week)")
    return expression


def _check_relative_path(value: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts or not value.strip():
        raise ValueError(f"{value!r}: artifact paths are relative to the project directory and stay inside it")
    return value


def _check_data_set_size(value: int | None) -> int | None:
    if value == 0:
        raise ValueError("a data set's size is the most its task may store: more than 0 bytes, such as 10Gi")
    return value


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    def parse_unless_none(value: object) -> Any:
        return None if value is None else parse(value)

    return parse_unless_none


Name = Annotated[str, AfterValidator(_check_name)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
CpuMillis = Annotated[int | None, BeforeValidator(_optional(parse_cpu_millis))]
Bytes = Annotated[int | None, BeforeValidator(_optional(parse_bytes))]
StorageBytes = Annotated[int | None, BeforeValidator(_optional(lambda v: parse_bytes(v, resource="storage")))]
Gpus = Annotated[int | None, BeforeValidator(_optional(parse_gpus))]
TimeoutSeconds = Annotated[float | None, BeforeValidator(_optional(parse_timeout))]


class SpecModel(BaseModel):
    """Base of every ``ame.yml`` model: strict about unknown keys, frozen, source-aware."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _source: LocDict | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_source(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(data, LocDict):
            # Lets an unknown key be answered with this model's field names.
            data.schema = cls
            if data.tag is not None:
                raise PydanticCustomError(
                    "unexpected_tag", "the YAML tag {tag} is not expected here", {"tag": data.tag}
                )
        model = handler(data)
        if isinstance(data, LocDict) and isinstance(model, SpecModel):
            model._source = data
        return model

    def __eq__(self, other: object) -> bool:
        # Where a value was written is not part of the value: the same task loaded from two
        # files (or built in code) must compare equal. pydantic would compare private attrs.
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SpecModel)
        return self.__dict__ == other.__dict__

    __hash__ = BaseModel.__hash__

    def source_mark(self, field: str | None = None) -> Mark | None:
        """Where this model (or the value of one of its fields, by field name) was written."""
        source = self._source
        if source is None:
            return None
        if field is None:
            return source.mark
        info = type(self).model_fields.get(field)
        key = info.alias if info is not None and info.alias is not None else field
        return source.value_mark(key)

    def wrote(self, field: str) -> bool:
        """Whether the source file had this field's key (even if its value was unusable)."""
        info = type(self).model_fields.get(field)
        key = info.alias if info is not None and info.alias is not None else field
        return self._source is not None and key in self._source

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys users write for this model, in declaration order."""
        return [info.alias or name for name, info in cls.model_fields.items()]


class Executor(SpecModel):
    """How a task's environment is set up and its command run (the ``!poetry`` … tags)."""

    kind: ExecutorKind
    python_version: str | None = Field(None, alias="pythonVersion")
    command: str
    image: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        command = data.get("command")
        if isinstance(command, list) and all(isinstance(part, str) for part in command):
            data = _copy_with(data, command=shlex.join(command))
        if data.get("kind") == "mlflow" and data.get("command") is None:
            data = _copy_with(data, command=MLFLOW_DEFAULT_COMMAND)
        return data

    @model_validator(mode="after")
    def _poetry_needs_python(self) -> Executor:
        if self.kind == "poetry" and not self.python_version:
            raise PydanticCustomError(
                "python_version_required",
                'the !poetry executor needs pythonVersion (e.g. pythonVersion: "3.11")',
            )
        if not self.command.strip():
            raise PydanticCustomError("empty_command", "command must not be empty")
        return self


class ResourceRequests(SpecModel):
    """``resources:`` as written: Kubernetes quantities, normalised to integers on load.

    Aliases only (no field names) on purpose: ``cpu: 4`` means four CPUs, and a caller
    passing ``cpu_millis=4`` by name would silently mean something else.
    """

    model_config = ConfigDict(populate_by_name=False)

    cpu_millis: CpuMillis = Field(None, alias="cpu")
    memory_bytes: Bytes = Field(None, alias="memory")
    storage_bytes: StorageBytes = Field(None, alias="storage")
    gpus: Gpus = Field(None, alias="nvidia.com/gpu")
    gpu_memory_bytes: Bytes = Field(None, alias="vram")
    gpu_model: str | None = Field(None, alias="gpuModel", min_length=1, max_length=63)


class EnvVar(SpecModel):
    """One environment variable, ``- key: NAME`` / ``val: value``."""

    key: EnvName
    val: str


class AmeSecret(SpecModel):
    """A secret from AME's own store (``!ame``), injected as the variable ``inject_as``."""

    kind: Literal["ame"] = "ame"
    key: str
    inject_as: EnvName = Field(alias="injectAs")


class VaultSecret(SpecModel):
    """A secret read from a HashiCorp Vault (``!vault``), injected as ``inject_as``."""

    kind: Literal["vault"] = "vault"
    vault: str
    key: str
    inject_as: EnvName = Field(alias="injectAs")


Secret = Annotated[AmeSecret | VaultSecret, Field(discriminator="kind")]


class Artifacts(SpecModel):
    """Which files a task's run keeps: listed paths, and/or every new or changed file."""

    paths: list[Annotated[str, AfterValidator(_check_relative_path)]] = Field(default_factory=list)
    save_changed_files: bool = Field(False, alias="saveChangedFiles")


class DataSetRef(SpecModel):
    """A data set a task reads; ``project`` is ``None`` for the task's own project."""

    name: Name
    project: Name | None = None


# The name of a secret in AME's secret store (ame_api.secrets.service.NAME).
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,255}$")


def _check_secret_name(value: str) -> str:
    if not _SECRET_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a secret name: 1-256 letters, digits, '_', '.', '-' or '/', starting with a letter, "
            "digit or '_' (the name of a secret in AME's secret store, set with `ame secret set`)"
        )
    return value


class Webhook(SpecModel):
    """``triggers: {webhook: {secret: KEY}}``: the task runs on each signed POST to its hook; ``secret`` names the
    secret (in AME's secret store) that signs the deliveries."""

    secret: Annotated[str, AfterValidator(_check_secret_name)]


def _check_zone(value: str) -> str:
    from ame.cron import zone

    zone(value)  # InvalidZone is a ValueError: reported at the value's file:line:col
    return value


# How much jitter a schedule may ask for: a delay longer than an hour is a different schedule.
MAX_JITTER_SECONDS = 3600.0


class Triggers(SpecModel):
    """What starts a task on its own: a cron ``schedule`` (and how it fires, written flat beside it) and a
    ``webhook``.

    ``timezone`` is the IANA zone the expression is read in. ``catchUp`` says what slots missed while the
    scheduler was away do when it is back (``none``: skipped, ``latest``: the most recent one fires,
    ``all``: each fires, up to the server's cap). ``overlap`` says what a slot does while the previous run
    still runs (``allow``, ``skip``, or ``queue``: it waits for it). ``jitter`` delays each slot by a bounded
    amount, the same for a slot in every replica.
    """

    schedule: Annotated[str, AfterValidator(_check_schedule)] | None = None
    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"
    catch_up: Literal["none", "latest", "all"] = Field("none", alias="catchUp")
    overlap: Literal["allow", "skip", "queue"] = "allow"
    jitter: Annotated[Duration, Field(ge=0, le=MAX_JITTER_SECONDS)] = 0.0
    webhook: Webhook | None = None


class TemplateRef(SpecModel):
    """``fromTemplate``: a template in this project, or in ``project`` when given."""

    name: Name
    project: Name | None = None


class TaskRef(SpecModel):
    """``taskRef``: another task of the same project."""

    name: Name
    project: Name | None = None


class Task(SpecModel):
    """A task as written. Every field is optional here because templates and references
    may supply them; :func:`ame.spec.resolve_task` checks the combined result."""

    name: Name | None = None
    executor: Executor | None = None
    resources: ResourceRequests | None = None
    environment: list[EnvVar] | None = None
    secrets: list[Secret] | None = None
    artifacts: Artifacts | None = None
    data_sets: list[DataSetRef] | None = Field(None, alias="dataSets")
    triggers: Triggers | None = None
    timeout_seconds: TimeoutSeconds = Field(None, alias="timeout")
    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = None
    # The server's admission loop the task's runs queue in (seed 002's `metadata`); unset: the organisation's own.
    loop: Name | None = None
    from_template: TemplateRef | None = Field(None, alias="fromTemplate")
    task_ref: TaskRef | None = Field(None, alias="taskRef")
    pipeline: list[list[Task]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if self.executor is not None and self.pipeline is not None:
            raise PydanticCustomError(
                "executor_and_pipeline",
                "a task has either an executor or a pipeline, not both; move the command into a pipeline step",
            )
        if self.task_ref is not None:
            clashing = [
                alias
                for field, alias in (
                    ("executor", "executor"),
                    ("pipeline", "pipeline"),
                    ("from_template", "fromTemplate"),
                )
                if getattr(self, field) is not None
            ]
            if clashing:
                raise PydanticCustomError(
                    "task_ref_and_body",
                    "a task with taskRef runs the referenced task and cannot also set {fields}; "
                    "use fromTemplate to build a new task from shared settings",
                    {"fields": " or ".join(clashing)},
                )
        if self.pipeline is not None and not self.pipeline:
            raise PydanticCustomError("empty_pipeline", "pipeline needs at least one step")
        return self


class Template(Task):
    """A named, partial task that tasks build on with ``fromTemplate``."""

    name: Name

    @model_validator(mode="after")
    def _no_task_ref(self) -> Template:
        if self.task_ref is not None:
            raise PydanticCustomError(
                "template_task_ref", "a template cannot use taskRef; templates are built from fields"
            )
        return self


class Training(SpecModel):
    """How a model is trained: one task (inline or ``taskRef``)."""

    task: Task


class Deployment(SpecModel):
    """How a validated model version is served."""

    ingress_annotations: dict[str, str] = Field(default_factory=dict, alias="ingressAnnotations")
    replicas: Annotated[int, Field(ge=0)] | None = None
    image: str | None = None
    resources: ResourceRequests | None = None
    enable_tls: bool | None = Field(None, alias="enableTls")


class MlModel(SpecModel):
    """An entry of ``models:``: training, validation and deployment of one model."""

    name: Name
    training: Training | None = None
    validation_task: Task | None = Field(None, alias="validationTask")
    deployment: Deployment | None = None


class DataSet(SpecModel):
    """An entry of the project's ``dataSets:``: data produced once (by ``task``) at ``path``."""

    name: Name
    path: str
    task: Task | None = None
    # The most its producing task may leave at `path`; a production over it fails and stores nothing.
    size: Annotated[Bytes, AfterValidator(_check_data_set_size)] = None


class Project(SpecModel):
    """A whole ``ame.yml``. ``tasks`` and ``templates`` are keyed by name, in file order."""

    name: Name | None = None
    tasks: dict[str, Task] = Field(default_factory=dict)
    templates: dict[str, Template] = Field(default_factory=dict)
    models: list[MlModel] = Field(default_factory=list)
    data_sets: list[DataSet] = Field(default_factory=list, alias="dataSets")
    enable_triggers: bool | None = Field(None, alias="enableTriggers")

    _file: str | None = PrivateAttr(default=None)

    @property
    def source_file(self) -> str | None:
        """The file this project was read from (as shown in error messages)."""
        return self._file

    def task_names(self) -> list[str]:
        """Names of the project's tasks in file order."""
        return list(self.tasks)


def _copy_with(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``changes``; keeps positions when ``data`` is a LocDict."""
    if isinstance(data, LocDict):
        copy = LocDict(data.mark, data.tag)
        copy.synthetic = data.synthetic
        for key, value in data.items():
            copy.put(key, value, data.key_mark(key), data.value_mark(key))
        for key, value in changes.items():
            copy[key] = value
        return copy
    return {**data, **changes}
