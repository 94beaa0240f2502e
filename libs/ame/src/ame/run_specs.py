"""A resolved task as a run spec and back: what `ame task run NAME` sends, and what a launcher runs from it.

The two directions live together so they cannot drift: a remote run is the task `-l` would run, carried in a
`RunSpec` and turned back into the same `ResolvedTask` where it executes. A round trip keeps every field a run
spec carries (command, executor, environment, secrets, every resource including `gpu_memory_bytes`, timeout,
retries, artifacts, data sets); tests hold it to that. The CLI, the SDK and the services build run specs for
tasks here and nowhere else.
"""

from __future__ import annotations

from pydantic import JsonValue

from ame.domain import (
    ArtifactsSpec,
    DataSetRef,
    EnvVar,
    ExecutorRef,
    PipelineStage,
    PipelineStep,
    RunSpec,
    SecretRef,
)
from ame.spec import AmeSecret, Artifacts, Executor, ResolvedTask, VaultSecret
from ame.spec import DataSetRef as SpecDataSetRef
from ame.spec import EnvVar as SpecEnvVar

__all__ = [
    "pipeline_labels",
    "run_spec_for_any_task",
    "run_spec_for_pipeline",
    "run_spec_for_task",
    "task_for_run_spec",
    "with_args",
]


def run_spec_for_task(task: ResolvedTask, *, project: str, project_version_id: str = "") -> RunSpec:
    """The spec of a remote run of `task`, a plain task (a pipeline's is `run_spec_for_pipeline`)."""
    if task.executor is None:
        raise ValueError(f"task {task.name!r} is a pipeline; a run spec carries one command")
    return RunSpec(
        project=project,
        task=task.name,
        command=task.executor.command,
        executor=ExecutorRef(
            kind=task.executor.kind,
            python_version=task.executor.python_version or "",
            image=task.executor.image or "",
        ),
        environment=[EnvVar(key=e.key, value=e.val) for e in task.environment],
        secrets=[
            SecretRef(key=s.key, inject_as=s.inject_as, vault=s.vault if isinstance(s, VaultSecret) else "")
            for s in task.secrets
        ],
        resources=task.resources,
        timeout_seconds=task.timeout_seconds,
        retries=task.retries,
        loop=task.loop or "",
        artifacts=ArtifactsSpec(paths=list(task.artifacts.paths), save_changed_files=task.artifacts.save_changed_files),
        data_sets=[DataSetRef(name=d.name, project=d.project or "") for d in task.data_sets],
        project_version_id=project_version_id,
    )


def run_spec_for_pipeline(task: ResolvedTask, *, project: str, project_version_id: str = "") -> RunSpec:
    """The spec of a remote pipeline run: one stage per stage of `task`, each step the run spec of its task.

    A step that is itself a pipeline is spliced in when it stands alone in its stage (its steps' labels are
    prefixed `name/`, as `-l` prints them); inside a parallel group it cannot be, and is refused.
    """
    if not task.pipeline:
        raise ValueError(f"task {task.name!r} is not a pipeline")
    return RunSpec(
        project=project,
        task=task.name,
        pipeline=_stages(task, project, project_version_id, ""),
        project_version_id=project_version_id,
        # A pipeline's own timeout bounds the whole pipeline (its steps keep theirs).
        timeout_seconds=task.timeout_seconds,
    )


def _stages(task: ResolvedTask, project: str, version: str, prefix: str) -> list[PipelineStage]:
    stages: list[PipelineStage] = []
    for stage in task.pipeline:
        if len(stage) == 1 and stage[0].pipeline:
            stages.extend(_stages(stage[0], project, version, f"{prefix}{stage[0].name}/"))
            continue
        steps = []
        for step in stage:
            if step.pipeline:
                raise ValueError(
                    f"step {prefix}{step.name} of pipeline {task.name!r} is a pipeline inside a parallel group; "
                    "remote pipelines run such a group with plain steps only (run it with -l)"
                )
            spec = run_spec_for_task(step, project=project, project_version_id=version)
            steps.append(PipelineStep(name=prefix + step.name, spec=spec))
        stages.append(PipelineStage(steps=steps))
    return stages


def run_spec_for_any_task(task: ResolvedTask, *, project: str, project_version_id: str = "") -> RunSpec:
    """The spec of a remote run of `task`, a pipeline or not (what a schedule or a webhook starts); raises
    ValueError for a pipeline that cannot run remotely, saying why."""
    if task.executor is None:
        return run_spec_for_pipeline(task, project=project, project_version_id=project_version_id)
    return run_spec_for_task(task, project=project, project_version_id=project_version_id)


def with_args(spec: RunSpec, args: JsonValue) -> RunSpec:
    """`spec` with task arguments `args`; a pipeline's go to every step (as `-l` gives them to each step), not to
    the parent, which runs nothing."""
    if not spec.pipeline:
        return spec.model_copy(update={"args": args})
    stages = [
        stage.model_copy(
            update={"steps": [step.model_copy(update={"spec": with_args(step.spec, args)}) for step in stage.steps]}
        )
        for stage in spec.pipeline
    ]
    return spec.model_copy(update={"pipeline": stages})


def pipeline_labels(spec: RunSpec) -> list[str]:
    """The step labels of a pipeline spec, in order."""
    return [step.name for stage in spec.pipeline for step in stage.steps]


def task_for_run_spec(spec: RunSpec) -> ResolvedTask:
    """The task a launcher runs for `spec`, through the same runner as `ame task run -l`."""
    executor = Executor.model_validate(
        {
            "kind": spec.executor.kind,
            "command": spec.command,
            "pythonVersion": spec.executor.python_version or None,
            "image": spec.executor.image or None,
        }
    )
    secrets: list[AmeSecret | VaultSecret] = [
        VaultSecret.model_validate({"vault": s.vault, "key": s.key, "injectAs": s.inject_as})
        if s.vault
        else AmeSecret.model_validate({"key": s.key, "injectAs": s.inject_as})
        for s in spec.secrets
    ]
    return ResolvedTask(
        name=spec.task,
        project=spec.project,
        executor=executor,
        resources=spec.resources,
        environment=[SpecEnvVar.model_validate({"key": e.key, "val": e.value}) for e in spec.environment],
        secrets=secrets,
        artifacts=Artifacts.model_validate(
            {"paths": list(spec.artifacts.paths), "saveChangedFiles": spec.artifacts.save_changed_files}
        ),
        data_sets=[
            SpecDataSetRef.model_validate({"name": d.name, "project": d.project or None}) for d in spec.data_sets
        ],
        timeout_seconds=spec.timeout_seconds,
        retries=spec.retries,
        loop=spec.loop or None,
    )
