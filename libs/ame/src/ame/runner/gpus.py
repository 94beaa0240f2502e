"""Whole GPUs handed out host-wide: one lock file per device, held with flock for as long as a run uses it.

Separate `ame task run -l` processes (and a launcher on the same host, if it shares the lock directory) must
never give one device to two runs. A lock file per device, locked with `flock`, gives that without a daemon:
the kernel releases the lock when the holder closes the file or dies, so a crashed CLI never leaks a GPU.
`flock` locks belong to the open file description, so two leases taken in one process exclude each other too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.runner.memory_limits import MemoryEnforcement

__all__ = [
    "GpuLease",
    "GpuPool",
    "GpuRequestError",
    "HostResourceSettings",
    "detect_gpus",
    "gpu_environment",
    "parse_gpu_list",
    "waiting_message",
]

# How often a waiting run looks for a freed device. flock has no "any of these" wait, and a free device is
# rarely urgent at the scale of runs that take minutes.
_POLL_SECONDS = 0.2


class HostResourceSettings(BaseSettings):
    """What this host offers to `ame task run -l` (`AME_GPUS`, `AME_MEMORY_ENFORCEMENT`)."""

    model_config = SettingsConfigDict(env_prefix="AME_", extra="ignore")

    gpus: str | None = Field(
        None, description='GPU ids runs may use ("0,1"); unset: counted with `nvidia-smi -L`; empty: none.'
    )
    memory_enforcement: MemoryEnforcement = Field(
        "auto", description="How memory limits are enforced: a cgroup where possible (auto), only one, or a watchdog."
    )


class GpuRequestError(Exception):
    """A request this host can never meet (more GPUs than it has)."""


def parse_gpu_list(text: str) -> list[str]:
    """`"0,1"` -> `["0", "1"]`; blanks dropped, duplicates refused."""
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if len(set(devices)) != len(devices):
        raise ValueError(f"GPU list {text!r} names a device twice")
    for device in devices:
        if not all(c.isalnum() or c in "-_:" for c in device):
            raise ValueError(f"GPU id {device!r} may contain only letters, digits, '-', '_' and ':'")
    return devices


def detect_gpus() -> list[str]:
    """The host's GPU indices from `nvidia-smi -L`; none when it is absent or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        listing = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    return [str(index) for index, line in enumerate(ln for ln in listing.stdout.splitlines() if ln.startswith("GPU "))]


def gpu_environment(devices: Sequence[str]) -> dict[str, str]:
    """The variables that confine a run to `devices` (none: the run sees no GPU)."""
    visible = ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "none"}


def waiting_message(count: int, free: int, total: int) -> str:
    return f"waiting for {count} GPU{'s' if count != 1 else ''}, {free} of {total} free"


@dataclass
class GpuLease:
    """Devices held by one run; `release` (or the process ending) gives them back."""

    devices: tuple[str, ...]
    _files: list[int] = field(default_factory=list, repr=False)

    def environment(self) -> dict[str, str]:
        return gpu_environment(self.devices)

    @property
    def fds(self) -> tuple[int, ...]:
        """The locked descriptors; a run's processes inherit them, so a device stays taken while any of them
        lives, even if the process that took it was killed."""
        return tuple(self._files)

    def release(self) -> None:
        files, self._files = self._files, []
        for fd in files:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the description drops its flock


class GpuPool:
    """The GPUs of one host, shared by every process that uses the same lock directory."""

    def __init__(self, devices: Sequence[str], lock_dir: Path) -> None:
        self.devices = tuple(devices)
        self.lock_dir = lock_dir

    @classmethod
    def for_host(cls, lock_dir: Path, configured: str | None) -> GpuPool:
        devices = parse_gpu_list(configured) if configured is not None else detect_gpus()
        return cls(devices, lock_dir)

    @property
    def total(self) -> int:
        return len(self.devices)

    def check(self, count: int) -> None:
        """Raise GpuRequestError when `count` GPUs can never be had here."""
        if count > self.total:
            have = f"{self.total} GPU{'s' if self.total != 1 else ''}" if self.total else "no GPU"
            raise GpuRequestError(f"the task asks for {count} GPU{'s' if count != 1 else ''} and this host has {have}")

    def free(self) -> int:
        """How many devices nobody holds right now (a snapshot: it may change at once)."""
        free = 0
        for device in self.devices:
            lease = self._try_lock([device])
            if lease is not None:
                free += 1
                lease.release()
        return free

    def try_acquire(self, count: int) -> GpuLease | None:
        """Take `count` free devices now, or none at all."""
        self.check(count)
        if count <= 0:
            return GpuLease(())
        taken: list[GpuLease] = []
        for device in self.devices:
            lease = self._try_lock([device])
            if lease is not None:
                taken.append(lease)
                if len(taken) == count:
                    return GpuLease(
                        tuple(d for lease in taken for d in lease.devices),
                        [fd for lease in taken for fd in lease._files],
                    )
        for lease in taken:
            lease.release()
        return None

    async def acquire(
        self,
        count: int,
        *,
        cancel: asyncio.Event | None = None,
        on_wait: Callable[[str], Awaitable[None]] | None = None,
    ) -> GpuLease | None:
        """Wait until `count` devices are free and take them; None when `cancel` is set first.

        `on_wait` is told why the run waits, once and again whenever the number of free devices changes.
        Raises GpuRequestError at once for a request the host can never meet.
        """
        self.check(count)
        last: int | None = None
        while True:
            lease = await asyncio.to_thread(self.try_acquire, count)
            if lease is not None:
                return lease
            free = await asyncio.to_thread(self.free)
            if free != last and on_wait is not None:
                await on_wait(waiting_message(count, free, self.total))
            last = free
            if cancel is None:
                await asyncio.sleep(_POLL_SECONDS)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cancel.wait(), timeout=_POLL_SECONDS)
                if cancel.is_set():
                    return None

    def _try_lock(self, devices: Sequence[str]) -> GpuLease | None:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        fds: list[int] = []
        for device in devices:
            fd = os.open(self.lock_dir / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                GpuLease(tuple(devices), fds).release()
                return None
            fds.append(fd)
        return GpuLease(tuple(devices), fds)
