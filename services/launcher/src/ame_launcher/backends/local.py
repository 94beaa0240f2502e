"""The local backend: each run is the task `ame task run -l` would run, in a process group on this machine.

A run with a project version gets the version's files in its own directory (from the content cache) and runs
there through `ame.runner.LocalRunner`, the runner behind `-l`: the same executors and environment cache (kept
under the launcher's runner home, so an environment is built once for every run that needs it), the same
`pythonVersion`, environment variables and timeout (a timed-out run ends with 124). A run without a version
(`ame runs submit`) runs its command in an empty directory, through the same runner.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ame.domain import PIPELINE_PARENT_LABEL, RunState
from ame.run_specs import task_for_run_spec
from ame.runner import LocalRunner, RunSettings, SecretError, StreamName, artifact_prefix
from ame.runner.home import AmeHome
from ame.runner.process import OutputSink
from ame_launcher.artifact_uploads import ArtifactStoreError, AttemptArtifacts
from ame_launcher.backends import RunResult
from ame_launcher.content_cache import MaterialiseError
from ame_launcher.convert import LaunchCommand
from ame_launcher.data_sets import DataSetStoreError, materialise_data_sets, store_data_set_output
from ame_launcher.input_artifacts import InputArtifactsError, place_run_artifacts
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.project_versions import VersionReader
from ame_launcher.run_secrets import RunSecrets
from ame_launcher.settings import LauncherSettings

_T = TypeVar("_T")

_STATES = {
    "succeeded": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "cancelled": RunState.CANCELLED,
    "timed_out": RunState.TIMED_OUT,
}


class _Sink:
    def __init__(self, output: ChunkPublisher, on_started: Callable[[int | None], Awaitable[None]]) -> None:
        self._output = output
        self._on_started = on_started

    async def started(self, pid: int) -> None:
        # The child leads its own session, so its pid is its process group id.
        await self._on_started(pid)

    async def line(self, stream: StreamName, text: str) -> None:
        await self._output.write(stream, text)


class _Output:
    """The runner's output for a remote run: the task's lines and AME's notices, onto the run's log."""

    def __init__(self, output: ChunkPublisher, on_started: Callable[[int | None], Awaitable[None]]) -> None:
        self._output = output
        self._sink = _Sink(output, on_started)

    def sink(self, step: str | None) -> OutputSink:
        return self._sink

    async def notice(self, text: str) -> None:
        await self._output.write("system", text)


class LocalBackend:
    name = "local"

    def __init__(self, settings: LauncherSettings) -> None:
        self._settings = settings
        self._work_dir = settings.work_dir.resolve()
        self._home = AmeHome(settings.runner_home)
        self._versions = VersionReader(settings)

    async def close(self) -> None:
        await self._versions.close()

    async def prune_content_cache(self) -> int:
        """One pass of the content cache's retention (`content_cache_retention`); returns the blobs removed."""
        if self._settings.content_cache_retention is None:
            return 0
        return await self._versions.cache.prune(self._settings.content_cache_retention)

    def _environment(self, command: LaunchCommand) -> dict[str, str]:
        env = {k: os.environ[k] for k in self._settings.inherit_env if k in os.environ}
        env.update(AME_RUN_ATTEMPT=str(command.attempt))
        if self._settings.mlflow.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self._settings.mlflow.tracking_uri
        if self._settings.api_target and "AME_GRPC_TARGET" not in env:
            # Where `ame.Client()` inside the run reaches the api (with the run's own token, see "Orchestrations").
            env["AME_GRPC_TARGET"] = self._settings.api_target
            if self._settings.api_tls:
                env["AME_GRPC_TLS"] = "1"
        return env

    async def execute(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
    ) -> RunResult:
        spec = command.spec
        workdir = self._work_dir / "runs" / f"{command.run_id}-{command.attempt}"
        try:
            await asyncio.to_thread(_fresh_directory, workdir)
            if spec.project_version_id and command.project_source is None:
                return await _fail(
                    output, f"the launch command does not say where version {spec.project_version_id} lies"
                )
            if spec.layers:
                outcome = await _unless_cancelled(
                    self._versions.materialise_layered(
                        spec.project_version_id, command.project_source, command.organisation, spec.layers, workdir
                    ),
                    cancel,
                )
                if outcome is None:
                    return RunResult(RunState.CANCELLED, None, "cancelled while its files were fetched")
                if outcome.fetched:
                    await output.write("system", f"fetched {outcome.fetched} file(s) of the version and earlier steps")
            elif spec.project_version_id:
                if command.project_source is None:
                    return await _fail(
                        output, f"the launch command does not say where version {spec.project_version_id} lies"
                    )
                outcome = await _unless_cancelled(
                    self._versions.materialise(spec.project_version_id, command.project_source, workdir), cancel
                )
                if outcome is None:
                    return RunResult(RunState.CANCELLED, None, "cancelled while its project files were fetched")
                if outcome.fetched:
                    await output.write(
                        "system", f"fetched {outcome.fetched} file(s) of version {spec.project_version_id[:12]}"
                    )
            if spec.input_run_id:
                inputs = await _unless_cancelled(
                    place_run_artifacts(
                        self._versions.store, self._settings, command.organisation, spec.input_run_id, workdir
                    ),
                    cancel,
                )
                if inputs is None:
                    return RunResult(RunState.CANCELLED, None, "cancelled while its input artifacts were fetched")
                await output.write("system", f"placed {inputs} artifact(s) of run {spec.input_run_id}")
            if command.data_sets:
                placed = await _unless_cancelled(
                    materialise_data_sets(self._versions, command.data_sets, workdir), cancel
                )
                if placed is None:
                    return RunResult(RunState.CANCELLED, None, "cancelled while its data sets were placed")
                names = ", ".join(d.name for d in command.data_sets)
                await output.write(
                    "system",
                    f"data set(s) {names}: {placed.linked + placed.copied + placed.reflinked} file(s) placed"
                    + (f", {placed.fetched} fetched" if placed.fetched else ""),
                )
            # Resolved by the api on first use (only runs that declare secrets call it), for this attempt only.
            secrets = RunSecrets(
                self._settings.api_target,
                self._settings.api_token,
                command.organisation,
                command.run_id,
                command.attempt,
                self._settings.api_timeout,
                tls=self._settings.api_tls,
                ca_file=self._settings.api_ca_file,
            )
            # One attempt here: a retry is a new attempt of the run, launched by the scheduler after its backoff, so
            # the runner's own retry loop (what `-l` uses) must not run it again in place.
            task = task_for_run_spec(spec).model_copy(update={"retries": 0})
            # What the attempt saves goes to the object store under the run and attempt, for the api to serve.
            artifacts = AttemptArtifacts(
                self._versions.store,
                self._settings,
                organisation=command.organisation,
                run_id=command.run_id,
                attempt=command.attempt,
                runner_prefix=artifact_prefix(spec.project, task.name, command.run_id),
                always_index=PIPELINE_PARENT_LABEL in spec.labels,
            )
            runner = LocalRunner(
                RunSettings(
                    home=self._home,
                    project_dir=workdir,
                    project_name=spec.project,
                    base_env=self._environment(command),
                    secrets=secrets.ame(),
                    vault=secrets.vault,
                    artifacts=artifacts,
                    grace_seconds=self._settings.grace_period,
                    record_runs=False,
                    # GPUs were placed by the launcher (capacity.py) and arrive in the spec's environment.
                    memory_enforcement=self._settings.memory_enforcement,
                )
            )
            result = await runner.run(
                task, _Output(output, on_started), run_id=command.run_id, cancel=cancel, args=spec.args
            )
            await artifacts.finish()
            if command.data_set_output is not None and result.state == "succeeded":
                made = command.data_set_output
                version_id, files, size = await store_data_set_output(
                    await self._versions.store(), self._settings, made, workdir
                )
                await output.write(
                    "system", f"data set {made.name}: version {version_id[:12]} stored ({files} file(s), {size} bytes)"
                )
        except DataSetStoreError as exc:
            return await _fail(output, f"the data set could not be stored: {exc}")
        except ArtifactStoreError as exc:
            return await _fail(output, f"the run's artifacts could not be stored: {exc}")
        except (MaterialiseError, SecretError, InputArtifactsError) as exc:
            return await _fail(output, str(exc))
        finally:
            if not self._settings.keep_workdirs:
                await asyncio.to_thread(_remove, workdir)
        state = _STATES.get(result.state, RunState.FAILED)
        reason = "" if state == RunState.SUCCEEDED else (result.reason or "")
        return RunResult(state, result.exit_code, reason)


async def _fail(output: ChunkPublisher, reason: str) -> RunResult:
    await output.write("system", f"ame: {reason}")
    return RunResult(RunState.FAILED, None, reason)


async def _unless_cancelled(work: Awaitable[_T], cancel: asyncio.Event) -> _T | None:
    """`work`'s result, or None once `cancel` is set first (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(cancel.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def _fresh_directory(path: Path) -> None:
    # A redelivered attempt after a crash may find what its first try left: start from nothing.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
