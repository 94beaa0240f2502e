"""Where runs execute. Each backend turns a launch command into work and reports how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

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
