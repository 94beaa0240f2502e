"""Helper commands run while preparing a task (venv creation, installs), with their output shown.

Setup output goes to the sink's stderr stream so that a task's stdout stays exactly what the task
printed (people pipe it). Setup honours the run's cancel event like the task itself.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ame.runner.home import AmeHome
from ame.runner.process import OutputSink, ProcessSpec, StreamName, run_process

__all__ = ["SetupCancelledError", "SetupContext", "SetupError", "run_setup_step"]


class SetupError(Exception):
    """Preparing the task's environment failed; the task did not start."""


class SetupCancelledError(Exception):
    """The run was cancelled while its environment was being prepared."""


@dataclass(frozen=True)
class SetupContext:
    home: AmeHome
    project_dir: Path
    base_env: Mapping[str, str]
    sink: OutputSink
    cancel: asyncio.Event | None = None


class _AsStderr:
    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink

    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        await self._sink.line("stderr", text)


async def run_setup_step(
    context: SetupContext,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run one setup command to completion or raise SetupError / SetupCancelledError."""
    spec = ProcessSpec(
        argv=list(argv),
        cwd=cwd or context.project_dir,
        env=dict(env if env is not None else context.base_env),
        grace_seconds=5.0,
    )
    outcome = await run_process(spec, _AsStderr(context.sink), cancel=context.cancel)
    if outcome.state == "cancelled":
        raise SetupCancelledError("cancelled while preparing the environment")
    if outcome.state != "succeeded":
        command = shlex.join(argv)
        raise SetupError(f"`{command}` failed: {outcome.reason}")
