"""Settings of the launcher service (`AME_LAUNCHER_*`), composed with the platform's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration
from ame.runner.gpus import parse_gpu_list
from ame.runner.memory_limits import MemoryEnforcement
from ame_launcher.kubernetes.settings import KubernetesSettings
from ame_platform.mlflow import MlflowSettings
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings


class LauncherSettings(BaseSettings):
    # Inputs stay out of errors: the api token is a setting too.
    model_config = SettingsConfigDict(env_prefix="AME_LAUNCHER_", extra="forbid", hide_input_in_errors=True)

    backend: Literal["local", "kubernetes"] = Field(
        "local",
        description="Where runs execute: local process groups, or one pod per attempt (AME_LAUNCHER_KUBERNETES_*).",
    )
    max_concurrent_runs: int = Field(64, ge=1, description="Runs this replica executes at once.")
    work_dir: Path = Field(Path(".ame/launcher"), description="Where local runs get their working directories.")
    keep_workdirs: bool = Field(False, description="Keep a run's working directory after it ends (debugging).")
    grace_period: Duration = Field(
        10.0, description="After SIGTERM, how long a run's processes get before SIGKILL (cancel, timeout)."
    )
    lease_ttl: Duration = Field(30.0, description="A lease not renewed for this long is considered abandoned.")
    heartbeat_interval: Duration = Field(5.0, description="How often held leases are renewed.")
    reconcile_interval: Duration = Field(5.0, description="How often abandoned leases are looked for.")
    reconcile_grace: Duration | None = Field(
        None,
        description="After this launcher starts or sees the database fail, how long it waits before reporting any "
        "expired lease, so that live launchers renew theirs first; default: one lease TTL.",
    )
    inherit_env: list[str] = Field(
        default_factory=lambda: [
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TZ",
            "TMPDIR",
            "USER",
            "LOGNAME",
            "SHELL",
            # What installing a task's dependencies needs to reach a package index from this machine.
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "all_proxy",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
            "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL",
            "PIP_FIND_LINKS",
            "PIP_CERT",
            "UV_INDEX_URL",
            "UV_EXTRA_INDEX_URL",
            "UV_DEFAULT_INDEX",
            "UV_NATIVE_TLS",
            "UV_CACHE_DIR",
            "PYENV_ROOT",
            "PYENV_VERSION",
        ],
        description="Variables of the launcher's own environment a local run (and its environment's set-up) "
        "inherits; nothing else leaks in.",
    )
    home_dir: Path | None = Field(
        None,
        description="The runner's home on this machine: task environments, tools, interpreters' shims "
        "(default: <work_dir>/home). Shared by every run of this launcher, so an environment is built once.",
    )
    content_cache_dir: Path | None = Field(
        None, description="Where project files are cached by sha256 (default: <work_dir>/content)."
    )
    placement: Literal["auto", "reflink", "link", "copy"] = Field(
        "auto",
        description="How a run's files come out of the content cache: auto clones (reflink) where the filesystem "
        "can and hard-links read-only files otherwise; copy writes each run its own copy.",
    )
    fetch_attempts: int = Field(5, ge=1, description="Tries of each object-store read or write before the run fails.")
    fetch_backoff: Duration = Field(0.5, description="Wait before the second try; doubles, up to 10 s.")
    fetch_timeout: Duration = Field(
        600.0, description="Longest one object-store read or write (one blob, one artifact) may take."
    )
    content_cache_retention: Duration | None = Field(
        None,
        description="Remove cached project files that no run directory uses once unused for this long (e.g. '7d'); "
        "unset keeps them.",
    )
    retention_interval: Duration = Field(3600.0, gt=0, description="How often the content cache is pruned.")
    storage: StorageSettings = Field(
        default_factory=StorageSettings, description="The object store holding project versions (the api's)."
    )
    gpus: str | None = Field(
        None,
        description=(
            'GPU ids this launcher hands out, whole ("0,1"); unset: counted with `nvidia-smi -L`; empty: none.'
        ),
    )
    gpu_memory: str | None = Field(
        None,
        description='Each GPU\'s memory where nvidia-smi cannot tell: "24Gi" (all) or "0=24Gi,1=80Gi" (for `vram`).',
    )
    gpu_model: str | None = Field(
        None, description="Each GPU's model where nvidia-smi cannot tell, as AME_GPU_MEMORY (for `gpuModel`)."
    )
    gpu_lock_dir: Path | None = Field(
        None,
        description=(
            "Where the per-GPU lock files live (default: work_dir/gpus); launchers and `ame task run -l` that "
            "share it never share a GPU."
        ),
    )
    memory_enforcement: MemoryEnforcement = Field(
        "auto",
        description="How a run's memory limit is enforced: a cgroup where possible (auto), only one, or a watchdog.",
    )
    api_target: str | None = Field(
        None, description="gRPC address of the api, which resolves a run's secrets when it starts; unset: none."
    )
    api_token: SecretStr | None = Field(
        None, description="The launcher credential the api expects (its AME_SECRETS_LAUNCHER_TOKEN)."
    )
    api_timeout: Duration = Field(15.0, description="Longest the api may take to resolve a run's secrets.")
    api_tls: bool = Field(
        False,
        description="Call the api over TLS (when it serves AME_API_TLS_CERT_FILE), so secrets never cross "
        "the network in clear.",
    )
    api_ca_file: Path | None = Field(None, description="PEM bundle to trust for the api's certificate (a private CA).")
    log_chunk_lines: int = Field(256, ge=1, description="Most lines in one published log chunk.")
    log_flush_interval: Duration = Field(0.02, description="Longest a line waits before it is published.")
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the liveness (/livez) and readiness (/readyz) probes, on all interfaces; unset: none.",
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="The kubernetes backend's settings (AME_LAUNCHER_KUBERNETES_*)."
    )
    gc_interval: Duration = Field(60.0, gt=0, description="How often the kubernetes backend removes finished pods.")
    nats: NatsSettings = Field(default_factory=NatsSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)

    @field_validator("gpus")
    @classmethod
    def _gpu_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gpu_list(value)  # refuses a malformed list at start, not at the first GPU run
        return value

    @property
    def runner_home(self) -> Path:
        return (self.home_dir or self.work_dir / "home").resolve()

    @property
    def content_dir(self) -> Path:
        return (self.content_cache_dir or self.work_dir / "content").resolve()
