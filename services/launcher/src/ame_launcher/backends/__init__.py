"""Where runs execute. Each backend turns a launch command into work and reports how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ame.domain import RunState
from ame_launcher.convert import LaunchCommand
from ame_launcher.logsink import ChunkPublisher


@dataclass(frozen=True)
class RunResult:
    state: RunState
    exit_code: int | None
    reason: str = ""


class Backend(Protocol):
    name: str

    async def execute(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
    ) -> RunResult:
        """Run the attempt to its end; `cancel` set means stop it. Calls `on_started` once it is running, with
        the process group id of a local run (None where there is none); again for each process it starts
        anew (an in-run retry)."""

    async def close(self) -> None:
        """Release what the backend opened (object-store clients); called once the launcher has drained."""


@runtime_checkable
class Adopter(Protocol):
    """A backend whose runs outlive the launcher that started them (pods): another launcher can take them over."""

    async def find(self, run_id: str, attempt: int) -> LaunchCommand | None:
        """The launch command of the attempt's running work, or None when there is none to adopt."""

    async def attach(
        self,
        command: LaunchCommand,
        output: ChunkPublisher,
        cancel: asyncio.Event,
        on_started: Callable[[int | None], Awaitable[None]],
        resume_at_ns: int,
    ) -> RunResult:
        """Follow the work to its end like `execute`, its output from after `resume_at_ns` (the time of the last
        line the run's log holds; 0: from the start)."""
