"""A task with templates, references and defaults applied: what AME actually runs.

:class:`ResolvedTask` is the contract between the spec and the rest of AME (CLI runner,
API, scheduler, launcher): everything is explicit, normalised to base units and free of
indirection, so no consumer ever has to know about templates or the older dialects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.durations import format_duration
from ame.domain.resources import Resources
from ame.spec.model import AmeSecret, Artifacts, DataSetRef, EnvVar, Executor, Triggers, VaultSecret


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
    # The whole triggers block as written (schedule and its options, webhook), when the task has one.
    triggers: Triggers | None = None

    @property
    def schedule(self) -> str | None:
        """`triggers.schedule`: the cron expression, or None."""
        return self.triggers.schedule if self.triggers is not None else None

    @property
    def webhook_secret(self) -> str | None:
        """`triggers.webhook.secret`: the secret that signs deliveries to the task's hook; None for no hook."""
        hook = self.triggers.webhook if self.triggers is not None else None
        return hook.secret if hook is not None else None

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
        if self.triggers is not None and self.schedule is not None:
            spec["triggers"] = {"schedule": self.schedule}
            spec["triggers"].update(
                self.triggers.model_dump(by_alias=True, exclude={"schedule", "webhook"}, exclude_defaults=True)
            )
        if self.webhook_secret is not None:
            spec.setdefault("triggers", {})["webhook"] = {"secret": self.webhook_secret}
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
