"""Helpers shared by the runner tests: loading tasks, settings, recording output, waiting."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from ame.runner.home import AmeHome
from ame.runner.process import OutputSink, StreamName
from ame.runner.secret_sources import LocalSecretStore, SecretSource, vault_source_from_env
from ame.runner.task_runs import RunSettings
from ame.spec import ResolvedTask, load_project, resolve_task
from ame.storage import LocalObjectStore

ProjectFactory = Callable[..., Path]


def load_task(project: Path, name: str) -> ResolvedTask:
    return resolve_task(load_project(project), name)


def run_settings(
    home: AmeHome,
    project: Path,
    *,
    secrets: SecretSource | None = None,
    max_parallel: int = 4,
    grace_seconds: float = 2.0,
) -> RunSettings:
    return RunSettings(
        home=home,
        project_dir=project,
        project_name="demo",
        base_env=dict(os.environ),
        secrets=secrets or LocalSecretStore(home.secrets_file),
        vault=vault_source_from_env,
        artifacts=LocalObjectStore(home.artifacts),
        max_parallel=max_parallel,
        grace_seconds=grace_seconds,
    )


class RecordingOutput:
    """A RunOutput that keeps every line per step, in arrival order."""

    def __init__(self) -> None:
        self.lines: list[tuple[str | None, StreamName, str]] = []
        self.notices: list[str] = []

    def sink(self, step: str | None) -> OutputSink:
        return _StepSink(self, step)

    async def notice(self, text: str) -> None:
        self.notices.append(text)

    def of(self, step: str | None, stream: StreamName = "stdout") -> list[str]:
        return [text for name, kind, text in self.lines if name == step and kind == stream]


class _StepSink:
    def __init__(self, output: RecordingOutput, step: str | None) -> None:
        self._output = output
        self._step = step

    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        self._output.lines.append((self._step, stream, text))


async def wait_until(condition: Callable[[], bool], deadline_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)
