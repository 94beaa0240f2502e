"""What this launcher's host can place: GPUs handed out whole, images refused, cpu a share.

A run is placed after its lease is claimed and before the backend starts it. A run the host can never place
(more GPUs than it has, a container image on the local backend) fails at once with the reason. A run that
only has to wait for GPUs others hold waits here, holding its lease (renewed by heartbeats, so no other
launcher reports it lost) and its slot, and says why in its log: "waiting for 1 GPU, 0 of 2 free". It stays
`launching` meanwhile, and a cancel ends the wait.

Why wait holding the run, rather than nak the command with a delay: a nak counts as a delivery, so a run
that waits long would be dead-lettered after max_deliver tries; and a run handed back has nowhere to say why
it waits. The cost: with several launcher replicas, a run waits at the replica that took it even if another
has a free GPU. The embedded default runs one launcher per host; GPU hosts with several replicas share one
lock directory (`gpu_lock_dir`), so they never hand out one device twice either.

Devices are locked host-wide with the same lock files as `ame task run -l` (ame.runner.gpus): a launcher and
local runs that share a lock directory never share a GPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from ame.domain import EnvVar, RunSpec
from ame.runner.gpus import GpuLease, GpuNeed, GpuPool
from ame.runner.local_resources import UnrunnableError, check_runnable, cpu_note
from ame_launcher.convert import LaunchCommand
from ame_launcher.settings import LauncherSettings

__all__ = ["Capacity", "Placement"]


@dataclass
class Placement:
    """A run's share of the host: its GPUs (possibly none), held until `release`."""

    gpus: GpuLease
    hide_gpus: bool

    def apply(self, command: LaunchCommand) -> LaunchCommand:
        """The command with the variables that confine the run to its devices (last, so they win)."""
        if not self.gpus.devices and not self.hide_gpus:
            return command
        extra = [EnvVar(key=key, value=value) for key, value in self.gpus.environment().items()]
        spec = command.spec.model_copy(update={"environment": [*command.spec.environment, *extra]})
        return replace(command, spec=spec)

    def release(self) -> None:
        self.gpus.release()


class Capacity:
    def __init__(self, settings: LauncherSettings) -> None:
        lock_dir = settings.gpu_lock_dir or settings.work_dir / "gpus"
        self.gpus = GpuPool.for_host(
            lock_dir.resolve(), settings.gpus, memory=settings.gpu_memory, model=settings.gpu_model
        )

    def refusal(self, spec: RunSpec) -> str | None:
        """Why this host can never run `spec`, or None."""
        try:
            check_runnable(name=spec.task, image=spec.executor.image, resources=spec.resources, pool=self.gpus)
        except UnrunnableError as exc:
            return str(exc)
        return None

    def note(self, spec: RunSpec) -> str | None:
        return cpu_note(spec.task, spec.resources)

    async def place(
        self, spec: RunSpec, cancel: asyncio.Event, on_wait: Callable[[str], Awaitable[None]]
    ) -> Placement | None:
        """Wait for the run's GPUs and take them; None when cancelled first. Call `refusal` before."""
        need = GpuNeed.of(spec.resources)
        lease = await self.gpus.acquire(need, cancel=cancel, on_wait=on_wait) if need.count else GpuLease(())
        if lease is None:
            return None
        return Placement(lease, hide_gpus=self.gpus.total > 0)
