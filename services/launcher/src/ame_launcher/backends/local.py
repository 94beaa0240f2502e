"""The local backend: each run is a process group on this machine (the embedded default)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from ame.domain import RunState
from ame.runner import ProcessSpec, StreamName, run_process
from ame_launcher.backends import RunResult
from ame_launcher.convert import LaunchCommand
from ame_launcher.logsink import ChunkPublisher
from ame_launcher.settings import LauncherSettings

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


class LocalBackend:
    name = "local"

    def __init__(self, settings: LauncherSettings) -> None:
        self._settings = settings
        self._work_dir = settings.work_dir.resolve()

    def _environment(self, command: LaunchCommand) -> dict[str, str]:
        env = {k: os.environ[k] for k in self._settings.inherit_env if k in os.environ}
        env.update({e.key: e.value for e in command.spec.environment})
        env.update(
            AME_RUN_ID=command.run_id,
            AME_RUN_ATTEMPT=str(command.attempt),
            AME_PROJECT=command.spec.project,
            AME_TASK_NAME=command.spec.task,
        )
        return env

    async def execute(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
    ) -> RunResult:
        spec = command.spec
        if spec.secrets:
            names = ", ".join(s.inject_as for s in spec.secrets)
            reason = f"secrets ({names}) cannot be resolved: the server has no secret store configured"
            await output.write("system", f"ame: {reason}")
            return RunResult(RunState.FAILED, None, reason)
        if spec.executor.kind != "custom":
            reason = (
                f"the {spec.executor.kind!r} executor needs the project's files, and this run has no uploaded "
                "project version; use the 'custom' executor or run the task from its project"
            )
            await output.write("system", f"ame: {reason}")
            return RunResult(RunState.FAILED, None, reason)
        workdir = self._work_dir / "runs" / f"{command.run_id}-{command.attempt}"
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        try:
            outcome = await run_process(
                ProcessSpec(
                    argv=["/bin/sh", "-c", spec.command],
                    cwd=workdir,
                    env=self._environment(command),
                    timeout_seconds=spec.timeout_seconds,
                    grace_seconds=self._settings.grace_period,
                    memory_limit_bytes=spec.resources.memory_bytes,
                    memory_enforcement=self._settings.memory_enforcement,
                ),
                _Sink(output, on_started),
                cancel=cancel,
            )
        finally:
            if not self._settings.keep_workdirs:
                await asyncio.to_thread(_remove, workdir)
        return RunResult(_STATES[outcome.state], outcome.exit_code, outcome.reason or "")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
