"""Whole GPUs handed out host-wide: one lock file per device, held with flock for as long as a run uses it.

A task may also say what kind of GPU it needs: `vram` (the memory each of its GPUs must have at least) and
`gpuModel` (the product, as GPU feature discovery labels Kubernetes nodes, e.g. NVIDIA-A100-SXM4-80GB). Only
devices that have it are handed to the run. What each device has comes from `nvidia-smi`, or from
`AME_GPU_MEMORY` / `AME_GPU_MODEL` where it cannot tell (no driver, or a host described by hand); a request
for a property nobody knows is refused with a message naming the setting, never matched by guesswork.

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
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.quantities import QuantityError, format_bytes, parse_bytes
from ame.domain.resources import Resources
from ame.runner.memory_limits import MemoryEnforcement

__all__ = [
    "GpuDevice",
    "GpuLease",
    "GpuNeed",
    "GpuPool",
    "GpuRequestError",
    "HostResourceSettings",
    "detect_gpus",
    "gpu_environment",
    "parse_gpu_list",
    "parse_gpu_properties",
    "waiting_message",
]

_V = TypeVar("_V")
# How often a waiting run looks for a freed device. flock has no "any of these" wait, and a free device is
# rarely urgent at the scale of runs that take minutes.
_POLL_SECONDS = 0.2


class HostResourceSettings(BaseSettings):
    """What this host offers to `ame task run -l` (`AME_GPUS`, `AME_MEMORY_ENFORCEMENT`)."""

    model_config = SettingsConfigDict(env_prefix="AME_", extra="ignore")

    gpus: str | None = Field(
        None, description='GPU ids runs may use ("0,1"); unset: counted with `nvidia-smi -L`; empty: none.'
    )
    gpu_memory: str | None = Field(
        None, description='Each GPU\'s memory where nvidia-smi cannot tell: "24Gi" (every GPU) or "0=24Gi,1=80Gi".'
    )
    gpu_model: str | None = Field(
        None,
        description='Each GPU\'s model where nvidia-smi cannot tell: "NVIDIA-A100-SXM4-80GB" (all), "0=...,1=...".',
    )
    memory_enforcement: MemoryEnforcement = Field(
        "auto", description="How memory limits are enforced: a cgroup where possible (auto), only one, or a watchdog."
    )


class GpuRequestError(Exception):
    """A request this host can never meet (more GPUs than it has, or none of the kind asked for)."""


@dataclass(frozen=True)
class GpuDevice:
    """One device and what is known of it (None: unknown)."""

    id: str
    memory_bytes: int | None = None
    model: str | None = None


@dataclass(frozen=True)
class GpuNeed:
    """What a run asks for: `count` whole devices, each with at least `memory_bytes` and of `model`."""

    count: int
    memory_bytes: int | None = None
    model: str | None = None

    @classmethod
    def of(cls, resources: Resources) -> GpuNeed:
        return cls(resources.gpus or 0, resources.gpu_memory_bytes, resources.gpu_model)

    def describe(self) -> str:
        text = f"{self.count} GPU{'s' if self.count != 1 else ''}"
        if self.model:
            text += f" of model {self.model}"
        if self.memory_bytes:
            text += f" with at least {format_bytes(self.memory_bytes)} of memory"
        return text

    def fits(self, device: GpuDevice) -> bool:
        if self.memory_bytes and (device.memory_bytes is None or device.memory_bytes < self.memory_bytes):
            return False
        return not self.model or (device.model is not None and same_model(device.model, self.model))


def same_model(a: str, b: str) -> bool:
    """GPU feature discovery writes `NVIDIA-A100-SXM4-80GB` where nvidia-smi says `NVIDIA A100-SXM4-80GB`."""
    return a.strip().replace(" ", "-").lower() == b.strip().replace(" ", "-").lower()


def parse_gpu_properties(text: str, devices: Sequence[str], parse: Callable[[str], _V]) -> dict[str, _V]:
    """`"24Gi"` (every device) or `"0=24Gi,1=80Gi"` -> {device: value}; raises ValueError naming the problem."""
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        value = parse(text)
        return {device: value for device in devices}
    found: dict[str, _V] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        device, sep, value_text = part.partition("=")
        device = device.strip()
        if not sep or device not in devices:
            raise ValueError(f"{part!r}: expected DEVICE=VALUE with one of this host's GPUs ({', '.join(devices)})")
        if device in found:
            raise ValueError(f"GPU {device} is described twice")
        found[device] = parse(value_text.strip())
    return found


def parse_gpu_list(text: str) -> list[str]:
    """`"0,1"` -> `["0", "1"]`; blanks dropped, duplicates refused."""
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if len(set(devices)) != len(devices):
        raise ValueError(f"GPU list {text!r} names a device twice")
    for device in devices:
        if not all(c.isalnum() or c in "-_:" for c in device):
            raise ValueError(f"GPU id {device!r} may contain only letters, digits, '-', '_' and ':'")
    return devices


def detect_gpu_devices() -> list[GpuDevice]:
    """The host's GPUs with their memory and model from `nvidia-smi --query-gpu`; none when it is absent or
    fails (then `detect_gpus` still counts them with `nvidia-smi -L`)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    query = [binary, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        listing = subprocess.run(query, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    devices = []
    for line in listing.stdout.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3 or not cells[0].isdigit():
            continue
        memory = int(cells[2]) * 2**20 if cells[2].isdigit() else None  # MiB
        devices.append(GpuDevice(cells[0], memory, cells[1] or None))
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
    """The variables that confine a run to `devices` (none: the run sees no GPU).

    Device ids are nvidia-smi's indices, which follow the PCI bus; CUDA numbers devices fastest first unless told
    otherwise, so on a host with mixed GPUs index 1 could be another card than the one handed out."""
    visible = ",".join(devices)
    return {
        "CUDA_VISIBLE_DEVICES": visible,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NVIDIA_VISIBLE_DEVICES": visible or "none",
    }


def waiting_message(count: int, free: int, total: int, *, kind: str = "") -> str:
    """Why a run waits; `kind` is the need described, when it asks for more than a count."""
    wanted = kind if kind and kind != f"{count} GPU{'s' if count != 1 else ''}" else ""
    text = f"waiting for {count} GPU{'s' if count != 1 else ''}, {free} of {total} free"
    return f"{text} ({wanted})" if wanted else text


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

    def __init__(
        self,
        devices: Sequence[str | GpuDevice],
        lock_dir: Path,
        *,
        detect: Callable[[], list[GpuDevice]] | None = None,
    ) -> None:
        """`detect` tells what nvidia-smi knows of the devices; it is asked only when a run needs a kind of GPU
        that `devices` do not describe (so a host listed by hand runs plain GPU tasks without calling it)."""
        self._given = tuple(d if isinstance(d, GpuDevice) else GpuDevice(d) for d in devices)
        self._detect = detect
        self._detected: tuple[GpuDevice, ...] | None = None
        self.devices = tuple(d.id for d in self._given)
        self.lock_dir = lock_dir

    @classmethod
    def for_host(
        cls, lock_dir: Path, configured: str | None, *, memory: str | None = None, model: str | None = None
    ) -> GpuPool:
        """The host's GPUs (`configured`, else what nvidia-smi lists) with what is known of each; `memory` and
        `model` (AME_GPU_MEMORY, AME_GPU_MODEL) say it where nvidia-smi cannot. Raises ValueError for a bad one."""
        detected: list[GpuDevice] | None = None
        if configured is not None:
            ids = parse_gpu_list(configured)
        else:
            detected = detect_gpu_devices()
            ids = [d.id for d in detected] or detect_gpus()
        memories = parse_gpu_properties(memory or "", ids, _parse_memory)
        models = parse_gpu_properties(model or "", ids, _parse_model)
        given = [GpuDevice(i, memories.get(i), models.get(i)) for i in ids]
        pool = cls(given, lock_dir, detect=detect_gpu_devices if detected is None and ids else None)
        if detected is not None:
            pool._detected = tuple(detected)
        return pool

    @property
    def described(self) -> tuple[GpuDevice, ...]:
        """Each device with what the settings say of it, else what nvidia-smi says (asked once, when needed)."""
        if self._detected is None:
            self._detected = tuple(self._detect()) if self._detect is not None else ()
        found = {d.id: d for d in self._detected}
        return tuple(
            GpuDevice(
                d.id,
                d.memory_bytes if d.memory_bytes is not None else getattr(found.get(d.id), "memory_bytes", None),
                d.model if d.model is not None else getattr(found.get(d.id), "model", None),
            )
            for d in self._given
        )

    @property
    def total(self) -> int:
        return len(self.devices)

    def check(self, need: int | GpuNeed) -> None:
        """Raise GpuRequestError when `need` can never be met here."""
        need = _as_need(need)
        if need.count <= len(self._eligible(need)):
            return
        plural = "s" if self.total != 1 else ""
        have = f"{self.total} GPU{plural}" if self.total else "no GPU"
        if self.total and need.count <= self.total:
            kinds = ", ".join(_describe(d) for d in self.described)
            fits = len(self._eligible(need))
            have += f", {fits or 'none'} of that kind ({kinds})"
            unknown = [
                name
                for name, wanted, missing in (
                    ("AME_GPU_MEMORY", need.memory_bytes, [d for d in self.described if d.memory_bytes is None]),
                    ("AME_GPU_MODEL", need.model, [d for d in self.described if d.model is None]),
                )
                if wanted and missing
            ]
            if unknown:
                verb = "describes" if len(unknown) == 1 else "describe"
                have += f"; where nvidia-smi cannot tell, {' and '.join(unknown)} {verb} them"
        raise GpuRequestError(f"the task asks for {need.describe()} and this host has {have}")

    def free(self, need: int | GpuNeed = 0) -> int:
        """How many devices of the kind `need` asks for nobody holds right now (a snapshot: it may change)."""
        free = 0
        for device in self._eligible(_as_need(need)):
            lease = self._try_lock([device])
            if lease is not None:
                free += 1
                lease.release()
        return free

    def try_acquire(self, need: int | GpuNeed) -> GpuLease | None:
        """Take `need`'s devices now, or none at all."""
        need = _as_need(need)
        self.check(need)
        if need.count <= 0:
            return GpuLease(())
        taken: list[GpuLease] = []
        for device in self._eligible(need):
            lease = self._try_lock([device])
            if lease is not None:
                taken.append(lease)
                if len(taken) == need.count:
                    return GpuLease(
                        tuple(d for lease in taken for d in lease.devices),
                        [fd for lease in taken for fd in lease._files],
                    )
        for lease in taken:
            lease.release()
        return None

    async def acquire(
        self,
        need: int | GpuNeed,
        *,
        cancel: asyncio.Event | None = None,
        on_wait: Callable[[str], Awaitable[None]] | None = None,
    ) -> GpuLease | None:
        """Wait until `need`'s devices are free and take them; None when `cancel` is set first.

        `on_wait` is told why the run waits, once and again whenever the number of free devices changes.
        Raises GpuRequestError at once for a request the host can never meet.
        """
        need = _as_need(need)
        self.check(need)
        eligible = len(self._eligible(need))
        last: int | None = None
        while True:
            lease = await asyncio.to_thread(self.try_acquire, need)
            if lease is not None:
                return lease
            free = await asyncio.to_thread(self.free, need)
            if free != last and on_wait is not None:
                await on_wait(waiting_message(need.count, free, eligible, kind=need.describe()))
            last = free
            if cancel is None:
                await asyncio.sleep(_POLL_SECONDS)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cancel.wait(), timeout=_POLL_SECONDS)
                if cancel.is_set():
                    return None

    def _eligible(self, need: GpuNeed) -> list[str]:
        """The devices that fit `need`, smallest memory first: a plain request does not take the one big GPU a
        `vram` request could use while a small one is free."""
        if not need.memory_bytes and not need.model and self._detected is None:
            return list(self.devices)  # nothing to tell apart: nvidia-smi need not be asked
        fitting = [d for d in self.described if need.fits(d)]
        return [d.id for d in sorted(fitting, key=lambda d: d.memory_bytes or 0)]

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


def _as_need(need: int | GpuNeed) -> GpuNeed:
    return need if isinstance(need, GpuNeed) else GpuNeed(need)


def _describe(device: GpuDevice) -> str:
    memory = format_bytes(device.memory_bytes) if device.memory_bytes is not None else "memory unknown"
    return f"{device.id}: {device.model or 'model unknown'}, {memory}"


def _parse_memory(text: str) -> int:
    try:
        return parse_bytes(text, resource="GPU memory")
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _parse_model(text: str) -> str:
    if not text or len(text) > 63:
        raise ValueError(f"{text!r}: a GPU model is 1 to 63 characters")
    return text
