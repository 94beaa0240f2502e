"""Run a resolved task (or pipeline) locally: secrets, environment, command, retries, artifacts.

`LocalRunner` is what both `ame task run -l` and the launcher's local backend call. It owns the
run semantics shared with remote runs; where output goes is the caller's choice (`RunOutput`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pathspec
from pydantic import JsonValue

from ame.domain.ids import new_run_id
from ame.domain.limits import MAX_TASK_ARGS_ENV_BYTES
from ame.domain.task_args import encode_task_args
from ame.runner.artifacts import (
    artifact_prefix,
    changed_files,
    explicit_files,
    load_ignore_rules,
    save_artifacts,
    snapshot_files,
    storable_names,
)
from ame.runner.executors import prepare_command
from ame.runner.gpus import GpuLease, GpuNeed, GpuPool
from ame.runner.home import AmeHome
from ame.runner.interpreters import InterpreterNotFoundError
from ame.runner.local_resources import check_runnable, cpu_note
from ame.runner.memory_limits import MemoryEnforcement
from ame.runner.pipelines import run_pipeline
from ame.runner.process import OutputSink, ProcessOutcome, ProcessSpec, run_process
from ame.runner.results import RunResult, RunState, StepResult
from ame.runner.run_records import RunRecord, StepRecord, write_run_record
from ame.runner.sdk_site import sdk_site_env
from ame.runner.secret_sources import SecretRequest, SecretSource, resolve_secrets
from ame.runner.setup_steps import SetupCancelledError, SetupContext, SetupError
from ame.storage import ObjectStore

if TYPE_CHECKING:
    from ame.spec.resolved import ResolvedTask

__all__ = ["EXIT_CANCELLED", "EXIT_SETUP_FAILED", "EXIT_TIMED_OUT", "LocalRunner", "RunOutput", "RunSettings"]

# Exit codes for outcomes that have no process exit status of their own.
EXIT_SETUP_FAILED = 1
EXIT_CANCELLED = 130  # as a shell reports Ctrl-C
EXIT_TIMED_OUT = 124  # as timeout(1) reports it


class RunOutput(Protocol):
    """Where a run's output goes: one sink per step (None for a plain task), plus AME's notices."""

    def sink(self, step: str | None) -> OutputSink: ...

    async def notice(self, text: str) -> None: ...


@dataclass(frozen=True)
class RunSettings:
    """Everything a local run needs besides the task; built once by the caller."""

    home: AmeHome
    project_dir: Path
    project_name: str
    base_env: Mapping[str, str]
    secrets: SecretSource
    vault: Callable[[str], SecretSource]
    artifacts: ObjectStore
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 1)
    grace_seconds: float = 10.0
    record_runs: bool = True
    # The host's GPUs (None: GPU requests are not enforced) and how memory limits are enforced.
    gpus: GpuPool | None = None
    memory_enforcement: MemoryEnforcement = "auto"


class LocalRunner:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    async def run(
        self,
        task: ResolvedTask,
        output: RunOutput,
        *,
        run_id: str | None = None,
        cancel: asyncio.Event | None = None,
        args: JsonValue = None,
    ) -> RunResult:
        """Run `task` to completion; `args` are its task arguments (see `write_task_args`).

        Raises SecretError if a secret is missing, and UnrunnableError if a step can never run here (an image,
        more GPUs than the host has), before starting anything.
        """
        settings = self.settings
        for part in task.steps():
            check_runnable(
                name=part.name,
                image=part.executor.image if part.executor else None,
                resources=part.resources,
                pool=settings.gpus,
            )
        run_id = run_id or new_run_id()
        cancel = cancel or asyncio.Event()
        started_at = time.time()
        secrets = await self._resolve_secrets(task)
        masked = tuple(sorted({value for values in secrets.values() for value in values.values()}))
        prefix = artifact_prefix(settings.project_name, task.name, run_id)
        args_file = settings.home.task_args / f"{run_id}.json"
        args_env = await asyncio.to_thread(write_task_args, args_file, args)
        execution = _Execution(self.settings, run_id, prefix, secrets, masked, output, args_env)
        try:
            return await self._execute(task, execution, cancel, run_id, started_at, prefix)
        finally:
            args_file.unlink(missing_ok=True)

    async def _execute(
        self,
        task: ResolvedTask,
        execution: _Execution,
        cancel: asyncio.Event,
        run_id: str,
        started_at: float,
        prefix: str,
    ) -> RunResult:
        settings = self.settings
        if task.pipeline:
            semaphore = asyncio.Semaphore(max(1, settings.max_parallel))
            outcome = await run_pipeline(task, execution.run_step, semaphore, cancel)
            steps = outcome.steps
            state: RunState = outcome.state
            failed = next((s for s in steps if s.state in ("failed", "timed_out")), None)
            if state == "succeeded":
                exit_code, reason = 0, None
            elif state == "cancelled":
                exit_code, reason = EXIT_CANCELLED, "cancelled"
            elif state == "timed_out":
                exit_code, reason = EXIT_TIMED_OUT, f"pipeline timed out after {task.timeout_seconds:g} s"
            else:
                exit_code = failed.exit_code or EXIT_SETUP_FAILED if failed else EXIT_SETUP_FAILED
                reason = f"step {failed.name} {failed.state}" if failed else "failed"
        else:
            step = await execution.run_step(task, None, cancel)
            steps, state = [step], step.state
            if state == "cancelled":
                exit_code = EXIT_CANCELLED
            elif state == "timed_out":
                # As timeout(1) reports it, whatever signal ended the process; remote runs exit the same.
                exit_code = EXIT_TIMED_OUT
            else:
                exit_code = step.exit_code or 0
            if state != "succeeded" and exit_code == 0:
                exit_code = EXIT_SETUP_FAILED
            reason = step.reason

        result = RunResult(
            run_id=run_id,
            project=settings.project_name,
            task=task.name,
            state=state,
            exit_code=exit_code,
            started_at=started_at,
            finished_at=time.time(),
            artifact_prefix=prefix,
            steps=steps,
            reason=reason,
        )
        if settings.record_runs:
            await asyncio.to_thread(write_run_record, settings.home.runs, _record(result))
        return result

    async def _resolve_secrets(self, task: ResolvedTask) -> dict[str, dict[str, str]]:
        """Secrets per step name, all looked up before anything runs."""
        resolved: dict[str, dict[str, str]] = {}
        for step in task.steps():
            requests = [
                SecretRequest(
                    kind=secret.kind,
                    key=secret.key,
                    inject_as=secret.inject_as,
                    vault=getattr(secret, "vault", None),
                )
                for secret in step.secrets
            ]
            resolved[step.name] = await resolve_secrets(requests, ame=self.settings.secrets, vault=self.settings.vault)
        return resolved


class _Execution:
    """The per-run state a step needs; `run_step` is handed to the pipeline scheduler."""

    def __init__(
        self,
        settings: RunSettings,
        run_id: str,
        prefix: str,
        secrets: Mapping[str, Mapping[str, str]],
        masked: tuple[str, ...],
        output: RunOutput,
        args_env: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.args_env = args_env
        self.run_id = run_id
        self.prefix = prefix
        self.secrets = secrets
        self.masked = masked
        self.output = output

    async def run_step(self, task: ResolvedTask, label: str | None, cancel: asyncio.Event) -> StepResult:
        settings = self.settings
        name = label or task.name
        sink = self.output.sink(label)
        if task.executor is None:
            return StepResult(name, "failed", EXIT_SETUP_FAILED, reason="the task has no executor")
        env = dict(settings.base_env)
        env.update(
            AME_RUN_ID=self.run_id,
            AME_TASK_NAME=task.name,
            AME_PROJECT=settings.project_name,
        )
        env.update({var.key: var.val for var in task.environment})
        # After the task's own variables: these describe this run, and a task cannot redefine them.
        env.update(self.args_env)
        # Setup tools see the task's variables (index URLs, proxies) but never its secrets.
        setup = SetupContext(settings.home, settings.project_dir, env, sink, cancel)
        started_at = time.time()
        executor = task.executor
        try:
            async with prepare_command(executor.kind, executor.command, executor.python_version, setup) as command:
                if command.environment_built:
                    await self.output.notice(f"{name}: built environment {command.environment_key}")
                gpus = await self._take_gpus(task, name, cancel)
                if gpus is None:
                    return StepResult(name, "cancelled", EXIT_CANCELLED, started_at, time.time(), "cancelled")
                try:
                    pool = settings.gpus
                    # On a host with GPUs, a step that asks for none sees none, so it cannot use another run's.
                    gpu_env = gpus.environment() if pool is not None and pool.total > 0 else {}
                    child_env = command.apply({**env, **gpu_env, **self.secrets.get(task.name, {})})
                    spec = ProcessSpec(
                        argv=command.argv,
                        cwd=settings.project_dir,
                        env=child_env,
                        timeout_seconds=task.timeout_seconds,
                        grace_seconds=settings.grace_seconds,
                        secret_values=self.masked,
                        memory_limit_bytes=task.resources.memory_bytes,
                        memory_enforcement=settings.memory_enforcement,
                        pass_fds=gpus.fds,
                    )
                    return await self._run_with_retries(task, name, spec, sink, cancel)
                finally:
                    gpus.release()
        except SetupCancelledError:
            return StepResult(name, "cancelled", EXIT_CANCELLED, started_at, time.time(), "cancelled during setup")
        except (SetupError, InterpreterNotFoundError) as exc:
            await self.output.notice(f"{name}: {exc}")
            return StepResult(name, "failed", EXIT_SETUP_FAILED, started_at, time.time(), str(exc))

    async def _take_gpus(self, task: ResolvedTask, name: str, cancel: asyncio.Event) -> GpuLease | None:
        """The step's GPUs, waited for while others hold them (None: cancelled while waiting)."""
        if note := cpu_note(name, task.resources):
            await self.output.notice(note)
        pool = self.settings.gpus
        if pool is None or not task.resources.gpus:
            return GpuLease(())

        async def on_wait(reason: str) -> None:
            await self.output.notice(f"{name}: {reason}")

        lease_or_none = await pool.acquire(GpuNeed.of(task.resources), cancel=cancel, on_wait=on_wait)
        if lease_or_none is not None:
            await self.output.notice(f"{name}: using GPU {','.join(lease_or_none.devices)}")
        return lease_or_none

    async def _run_with_retries(
        self, task: ResolvedTask, name: str, spec: ProcessSpec, sink: OutputSink, cancel: asyncio.Event
    ) -> StepResult:
        ignore = load_ignore_rules(self.settings.project_dir)
        skip = (self.settings.home.root,)
        wants_changed = task.artifacts.save_changed_files
        before = (
            await asyncio.to_thread(snapshot_files, self.settings.project_dir, ignore, skip) if wants_changed else {}
        )
        attempts = 1 + max(0, task.retries)
        outcome: ProcessOutcome | None = None
        attempt = 0
        for attempt in range(1, attempts + 1):
            outcome = await run_process(spec, sink, cancel=cancel)
            if outcome.state in ("succeeded", "cancelled") or attempt == attempts:
                break
            await self.output.notice(f"{name}: {outcome.reason}; retrying ({attempt + 1}/{attempts})")
        assert outcome is not None  # the loop runs at least once
        keys = await self._save_artifacts(task, name, before, ignore, skip)
        return StepResult(
            name=name,
            state=outcome.state,
            exit_code=outcome.exit_code,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            reason=outcome.reason,
            attempts=attempt,
            artifacts=tuple(keys),
        )

    async def _save_artifacts(
        self,
        task: ResolvedTask,
        name: str,
        before: Mapping[str, tuple[int, int]],
        ignore: pathspec.GitIgnoreSpec,
        skip: tuple[Path, ...],
    ) -> list[str]:
        config = task.artifacts
        if not config.paths and not config.save_changed_files:
            return []
        project_dir = self.settings.project_dir
        files: set[str] = set()
        if config.paths:
            named, unmatched = await asyncio.to_thread(explicit_files, project_dir, list(config.paths), skip)
            files.update(named)
            for pattern in unmatched:
                await self.output.notice(f"{name}: artifact path {pattern!r} matched no file")
        if config.save_changed_files:
            after = await asyncio.to_thread(snapshot_files, project_dir, ignore, skip)
            files.update(changed_files(before, after))
        storable, unstorable = storable_names(sorted(files))
        for bad in unstorable:
            await self.output.notice(f"{name}: artifact {bad!r} not saved: its name cannot be an object key")
        keys = await save_artifacts(self.settings.artifacts, project_dir, self.prefix, storable)
        if keys:
            await self.output.notice(f"{name}: saved {len(keys)} artifact(s) under {self.prefix}")
        return keys


def write_task_args(path: Path, args: JsonValue) -> dict[str, str]:
    """Write the run's task arguments to `path` (always, `null` for none) and return the variables that hand
    them to the process: AME_IN_TASK, AME_TASK_ARGS_FILE and, when small, AME_TASK_ARGS (and where the SDK lives,
    `ame.runner.sdk_site`)."""
    text = encode_task_args(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private to the user: a webhook's payload may be anything its sender put there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
    env = {"AME_IN_TASK": "1", "AME_TASK_ARGS_FILE": str(path), **sdk_site_env()}
    if len(text) <= MAX_TASK_ARGS_ENV_BYTES:
        env["AME_TASK_ARGS"] = text
    return env


def _record(result: RunResult) -> RunRecord:
    return RunRecord(
        run_id=result.run_id,
        project=result.project,
        task=result.task,
        state=result.state,
        exit_code=result.exit_code,
        started_at=result.started_at,
        finished_at=result.finished_at,
        artifact_prefix=result.artifact_prefix,
        artifacts=result.artifacts,
        steps=[
            StepRecord(step.name, step.state, step.exit_code, step.duration_seconds, step.reason)
            for step in result.steps
        ],
        reason=result.reason,
    )
