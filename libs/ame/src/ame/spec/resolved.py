"""A task with templates, references and defaults applied: what AME actually runs.

:class:`ResolvedTask` is the contract between the spec and the rest of AME (CLI runner,
API, scheduler, launcher): everything is explicit, normalised to base units and free of
indirection, so no consumer ever has to know about templates or the older dialects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ame.spec.durations import format_duration
from ame.spec.model import AmeSecret, Artifacts, DataSetRef, EnvVar, Executor, VaultSecret
from ame.spec.quantities import format_bytes, format_cpu


class Resources(BaseModel):
    """Resource requests in base units; ``None`` means "not requested"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    storage_bytes: int | None = None
    gpus: int | None = None
    # Minimum memory per GPU (old README `vram`). Not a Kubernetes resource: a launcher can
    # only honour it through node selection, so it is not part of :meth:`to_k8s`.
    gpu_memory_bytes: int | None = None

    def to_k8s(self) -> dict[str, str]:
        """Canonical Kubernetes resource quantities, keyed by Kubernetes resource name.

        ``storage`` becomes ``ephemeral-storage``, the container resource that means
        "local disk for this container".
        """
        return self._quantities(storage_key="ephemeral-storage")

    def to_spec(self) -> dict[str, str]:
        """The same requests with ``ame.yml`` keys, as ``ame task view`` prints them."""
        quantities = self._quantities(storage_key="storage")
        if self.gpu_memory_bytes is not None:
            quantities["vram"] = format_bytes(self.gpu_memory_bytes)
        return quantities

    def _quantities(self, *, storage_key: str) -> dict[str, str]:
        quantities: dict[str, str] = {}
        if self.cpu_millis is not None:
            quantities["cpu"] = format_cpu(self.cpu_millis)
        if self.memory_bytes is not None:
            quantities["memory"] = format_bytes(self.memory_bytes)
        if self.storage_bytes is not None:
            quantities[storage_key] = format_bytes(self.storage_bytes)
        if self.gpus is not None:
            quantities["nvidia.com/gpu"] = str(self.gpus)
        return quantities


class ResolvedTask(BaseModel):
    """A runnable task.

    A plain task has an ``executor`` and an empty ``pipeline``. A pipeline task has
    ``executor = None`` and ``pipeline`` = stages run in order; a stage with one task is a
    sequential step, a stage with several tasks runs them in parallel. Steps are complete
    ResolvedTasks themselves (a step may in turn be a pipeline). For a pipeline task,
    ``timeout_seconds`` bounds the whole pipeline and ``schedule`` starts it; every other
    setting has already been passed down to the steps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    project: str | None = None
    executor: Executor | None
    pipeline: list[list[ResolvedTask]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    environment: list[EnvVar] = Field(default_factory=list)
    secrets: list[AmeSecret | VaultSecret] = Field(default_factory=list)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    data_sets: list[DataSetRef] = Field(default_factory=list)
    timeout_seconds: float | None = None
    retries: int = 0
    loop: str | None = None
    schedule: str | None = None

    @property
    def is_pipeline(self) -> bool:
        """True when this task runs steps instead of a command."""
        return bool(self.pipeline)

    def steps(self) -> Iterator[ResolvedTask]:
        """Every task that runs a command, depth first in pipeline order."""
        if not self.pipeline:
            yield self
            return
        for stage in self.pipeline:
            for step in stage:
                yield from step.steps()

    def to_spec(self) -> dict[str, Any]:
        """This task in ``ame.yml`` form (keys as users write them).

        Executors and secrets are returned as :class:`TaggedMapping` so a YAML writer can
        emit them as ``!poetry`` / ``!ame`` tags; the result is readable back by the loader.
        """
        spec: dict[str, Any] = {"name": self.name}
        if self.executor is not None:
            executor = {
                key: value
                for key, value in (
                    ("pythonVersion", self.executor.python_version),
                    ("command", self.executor.command),
                    ("image", self.executor.image),
                )
                if value is not None
            }
            spec["executor"] = TaggedMapping(self.executor.kind, executor)
        if self.pipeline:
            spec["pipeline"] = [
                stage[0].to_spec() if len(stage) == 1 else [step.to_spec() for step in stage] for stage in self.pipeline
            ]
        if resources := self.resources.to_spec():
            spec["resources"] = resources
        if self.environment:
            spec["environment"] = [{"key": env.key, "val": env.val} for env in self.environment]
        if self.secrets:
            spec["secrets"] = [_secret_spec(secret) for secret in self.secrets]
        if self.artifacts.paths or self.artifacts.save_changed_files:
            artifacts: dict[str, Any] = {}
            if self.artifacts.paths:
                artifacts["paths"] = list(self.artifacts.paths)
            if self.artifacts.save_changed_files:
                artifacts["saveChangedFiles"] = True
            spec["artifacts"] = artifacts
        if self.data_sets:
            spec["dataSets"] = [
                {"ref": {"name": ref.name, **({"project": ref.project} if ref.project else {})}}
                for ref in self.data_sets
            ]
        if self.schedule is not None:
            spec["triggers"] = {"schedule": self.schedule}
        if self.timeout_seconds is not None:
            spec["timeout"] = format_duration(self.timeout_seconds)
        if self.retries:
            spec["retries"] = self.retries
        if self.loop is not None:
            spec["loop"] = self.loop
        return spec


class TaggedMapping(dict[str, Any]):
    """A mapping that is written with a YAML tag (``!poetry``, ``!vault``)."""

    def __init__(self, tag: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.tag = tag


def _secret_spec(secret: AmeSecret | VaultSecret) -> TaggedMapping:
    if isinstance(secret, VaultSecret):
        return TaggedMapping("vault", {"vault": secret.vault, "key": secret.key, "injectAs": secret.inject_as})
    return TaggedMapping("ame", {"key": secret.key, "injectAs": secret.inject_as})
