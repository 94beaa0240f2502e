"""What the local backend can and cannot do with a task's resources, worded once for `-l` and the launcher.

GPUs are handed out whole, only those of the kind a task asks for (`vram`, `gpuModel`: ame.runner.gpus), and
memory is a hard limit (ame.runner.memory_limits). CPU is a share, not a reservation: a local run is never
refused or held back for its `cpu`, it runs with what the host has, and a request beyond the host's cores earns
a note. A container image cannot be honoured by a process
on this host, so a task that names one is refused rather than run in the wrong environment.
"""

from __future__ import annotations

import os

from ame.domain.quantities import format_cpu
from ame.domain.resources import Resources
from ame.runner.gpus import GpuNeed, GpuPool, GpuRequestError

__all__ = ["UnrunnableError", "check_runnable", "cpu_note", "gpu_kind_without_gpus", "image_refusal"]


class UnrunnableError(Exception):
    """A task the local backend can never run as written (an image, more GPUs than the host has)."""


def image_refusal(image: str) -> str:
    return (
        f"the task names the container image {image!r}, and the local backend runs tasks as processes on this "
        "host; remove `image:` to run it here, or run it where a container backend is configured"
    )


def check_runnable(*, name: str, image: str | None, resources: Resources, pool: GpuPool | None) -> None:
    """Raise UnrunnableError with the reason when `name` can never run here."""
    if image:
        raise UnrunnableError(f"{name}: {image_refusal(image)}")
    if (resources.gpu_memory_bytes or resources.gpu_model) and not resources.gpus:
        raise UnrunnableError(f"{name}: {gpu_kind_without_gpus()}")
    if resources.gpus and pool is not None:
        try:
            pool.check(GpuNeed.of(resources))
        except GpuRequestError as exc:
            raise UnrunnableError(f"{name}: {exc}") from None


def gpu_kind_without_gpus() -> str:
    return "vram and gpuModel say what kind of GPU the task needs, and it asks for none: add gpus (e.g. gpus: 1)"


def cpu_note(name: str, resources: Resources, host_cpus: int | None = None) -> str | None:
    """A note when the task asks for more CPUs than the host has (it runs anyway)."""
    cores = host_cpus or os.cpu_count() or 1
    cpu_millis = resources.cpu_millis
    if cpu_millis is None or cpu_millis <= cores * 1000:
        return None
    return (
        f"{name}: asks for {format_cpu(cpu_millis)} CPUs and this host has {cores}; on the local backend cpu is a "
        "share, not a reservation, so the task runs with the cores there are"
    )
