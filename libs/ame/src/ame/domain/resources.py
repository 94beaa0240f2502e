"""A task's resource requests, defined once: what `ame.yml` resolves to, what a run spec carries and the wire
codecs encode, what the local backend places (GPUs, memory) and what a Kubernetes backend will ask for.

Amounts are base units (millicores, bytes, whole GPUs); `None` means "not requested". Zero is read as "not
requested" too where the wire cannot tell them apart (proto3 scalars), so the codecs map 0 to None.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.limits import INT32_MAX, INT64_MAX
from ame.domain.quantities import format_bytes, format_cpu

__all__ = ["GPU_RESOURCE", "Resources"]

# The extended resource the NVIDIA device plugin advertises on Kubernetes nodes (and the `ame.yml` key).
GPU_RESOURCE = "nvidia.com/gpu"


class Resources(BaseModel):
    """Resource requests in base units, bounded by the proto fields that carry them (int64; int32 for gpus)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    cpu_millis: int | None = Field(None, ge=0, le=INT64_MAX)
    memory_bytes: int | None = Field(None, ge=0, le=INT64_MAX)
    storage_bytes: int | None = Field(None, ge=0, le=INT64_MAX)
    gpus: int | None = Field(None, ge=0, le=INT32_MAX)
    # Minimum memory per GPU (`vram` in ame.yml). Not a Kubernetes resource: a backend can only honour it by
    # choosing a node (a node selector or affinity on the GPU product), so `to_kubernetes` leaves it out.
    gpu_memory_bytes: int | None = Field(None, ge=0, le=INT64_MAX)
    # The GPU product a node must have (`gpuModel`): a node selector on Kubernetes, not a resource either.
    gpu_model: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
    )

    def to_kubernetes(self) -> dict[str, Any]:
        """The container's `resources` in Kubernetes form: `{"requests": {...}, "limits": {...}}`.

        Requests carry everything asked for. Limits carry memory and storage (hard limits, as the local
        backend enforces memory) and GPUs (Kubernetes requires extended resources in limits, equal to the
        request); cpu has no limit, because cpu is a share on every backend, never a throttle.
        """
        requests = self.quantities(storage_key="ephemeral-storage")
        limits = {key: value for key, value in requests.items() if key != "cpu"}
        form: dict[str, Any] = {}
        if requests:
            form["requests"] = requests
        if limits:
            form["limits"] = limits
        return form

    def to_spec(self) -> dict[str, str]:
        """The same requests with `ame.yml` keys, as `ame task view` prints them."""
        quantities = self.quantities(storage_key="storage")
        if self.gpu_memory_bytes is not None:
            quantities["vram"] = format_bytes(self.gpu_memory_bytes)
        if self.gpu_model is not None:
            quantities["gpuModel"] = self.gpu_model
        return quantities

    def quantities(self, *, storage_key: str = "ephemeral-storage") -> dict[str, str]:
        """Canonical quantities keyed by resource name (`cpu`, `memory`, storage_key, `nvidia.com/gpu`)."""
        quantities: dict[str, str] = {}
        if self.cpu_millis is not None:
            quantities["cpu"] = format_cpu(self.cpu_millis)
        if self.memory_bytes is not None:
            quantities["memory"] = format_bytes(self.memory_bytes)
        if self.storage_bytes is not None:
            quantities[storage_key] = format_bytes(self.storage_bytes)
        if self.gpus is not None:
            quantities[GPU_RESOURCE] = str(self.gpus)
        return quantities
