"""Settings of the kubernetes backend (`AME_LAUNCHER_KUBERNETES_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration

# Stock images: the init container needs only a Python 3 interpreter and the standard library.
_PYTHON_IMAGE = "python:3.11-slim"


class KubernetesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_LAUNCHER_KUBERNETES_", extra="forbid", hide_input_in_errors=True)

    namespace: str = Field("ame-runs", description="The namespace run pods (and their Secrets) are created in.")
    kubeconfig: Path | None = Field(
        None, description="A kubeconfig file to reach the cluster; unset: the in-cluster service account."
    )
    context: str | None = Field(None, description="The kubeconfig context to use; unset: its current context.")
    init_image: str = Field(
        _PYTHON_IMAGE, description="The stock image of the init container that fetches a run's files and runner."
    )
    images: dict[str, str] = Field(
        default_factory=lambda: {
            "custom": _PYTHON_IMAGE,
            "pip": _PYTHON_IMAGE,
            "poetry": _PYTHON_IMAGE,
            "pipenv": _PYTHON_IMAGE,
            "mlflow": _PYTHON_IMAGE,
        },
        description="Default image per executor kind (JSON), used when a task names no `image:`.",
    )
    python_image: str = Field(
        "python:{version}-slim",
        description="The image of a task that names `pythonVersion` and no `image:` ({version} is replaced).",
    )
    runner_python: str = Field("python3", description="The interpreter the main container runs the runner zipapp with.")
    gpu_model_label: str = Field(
        "nvidia.com/gpu.product", description="The node label a task's `gpuModel` selects on (GPU feature discovery)."
    )
    gpu_memory_label: str = Field(
        "nvidia.com/gpu.memory",
        description="The node label (MiB per GPU, GPU feature discovery) a task's `vram` is compared with.",
    )
    gpu_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations a GPU pod gets (JSON list of Kubernetes tolerations).",
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="imagePullSecrets of every run pod.")
    service_account: str | None = Field(None, description="The service account of run pods; unset: the default.")
    run_as_user: int = Field(1000, ge=1, description="The non-root uid run containers run as.")
    cache_volume_claim: str | None = Field(
        None,
        description="A PersistentVolumeClaim (ReadWriteMany) shared by run pods for executor environments keyed by "
        "lock file; unset: an emptyDir per pod (every run builds its environment).",
    )
    pending_timeout: Duration = Field(
        600.0, description="A pod that cannot be scheduled for this long fails with the scheduler's message."
    )
    image_pull_timeout: Duration = Field(
        300.0, description="A pod whose image cannot be pulled for this long fails (ImagePullBackOff)."
    )
    gc_delay: Duration = Field(
        300.0, description="How long a finished pod (and its logs) is kept after the run's log is archived."
    )
    quota_retry_interval: Duration = Field(
        10.0, description="How long a pod refused by a ResourceQuota (403) waits before it is created again."
    )
    watch_timeout: Duration = Field(
        300.0, description="A watch is renewed after this long even if nothing happened (server-side timeout)."
    )
    reconnect_delay: Duration = Field(1.0, description="Wait before a dropped watch or log stream is opened again.")
    plan_inline_max: int = Field(
        256 * 1024,
        ge=0,
        description="A pod's plan (its files' URLs, the task and its arguments) larger than this many bytes goes to "
        "the object store and the run's Secret holds a URL to it (a Secret holds at most 1 MiB).",
    )
    presign_ttl: Duration = Field(
        86400.0, description="Lifetime of the object-store URLs a pod fetches its files with and uploads through."
    )
