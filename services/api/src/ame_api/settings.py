"""Settings of the api service (`AME_API_*`), composed with the platform's."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration
from ame.domain.limits import MAX_NAME_CHARS, MAX_TASK_ARGS_BYTES, NAME_PATTERN
from ame.domain.quotas import LoopLimits
from ame_api.secrets.settings import SecretsSettings
from ame_api.sources.settings import SourceSettings
from ame_platform.clock import ClockSettings
from ame_platform.mlflow import MlflowSettings
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings

_GIB = 1024**3


def _default_loops() -> dict[str, LoopLimits]:
    # Seed 002: the metadata loop is shared by every organisation, runs one task at a time, with a 5-minute timeout.
    return {"metadata": LoopLimits(concurrency=1, default_timeout_seconds=300.0, shared=True)}


class AdmissionSettings(BaseSettings):
    """The admission step (`AME_ADMISSION_*`): server-wide cap and loops. Every api replica must share them."""

    model_config = SettingsConfigDict(env_prefix="AME_ADMISSION_", extra="forbid")

    max_active: int = Field(
        1000,
        ge=1,
        description="Runs admitted and not yet ended, server-wide; past it runs wait (round robin by organisation).",
    )
    interval: Duration = Field(
        1.0, description="How often each replica runs the admission step as a safety net (ends and submits also do)."
    )
    loops: dict[str, LoopLimits] = Field(
        default_factory=_default_loops,
        description="Named loops (JSON): name -> {concurrency, default_timeout_seconds, shared}.",
    )

    @field_validator("loops")
    @classmethod
    def _loop_names(cls, loops: dict[str, LoopLimits]) -> dict[str, LoopLimits]:
        for name in loops:
            if not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_NAME_CHARS:
                raise ValueError(f"loop name {name[:200]!r} is not a name (letters, digits, '_', '-', '.')")
        return loops


class WebhookSettings(BaseSettings):
    """Webhooks (`AME_WEBHOOKS_*`): `POST /v1/hooks/{org}/{project}/{task}`."""

    model_config = SettingsConfigDict(env_prefix="AME_WEBHOOKS_", extra="forbid")

    max_body_bytes: int = Field(
        MAX_TASK_ARGS_BYTES,
        ge=1,
        le=MAX_TASK_ARGS_BYTES,
        description="Largest delivery body (413 past it); the payload becomes the run's task arguments, which the "
        "launch command carries on the bus, so it is at most their limit.",
    )
    rate: float = Field(
        5.0,
        gt=0,
        description="Deliveries a second each hook is allowed, refilled continuously (429 with Retry-After past "
        "it). Counted by each api replica on its own: the deployment allows this times its replicas.",
    )
    burst: int = Field(20, ge=1, description="Deliveries a hook may send at once before `rate` applies.")
    max_age: Duration = Field(
        300.0,
        gt=0,
        description="AME's signature scheme: refuse a delivery whose X-AME-Timestamp is older (or "
        "further ahead) than this.",
    )
    deliveries_kept: int = Field(20, ge=1, le=1000, description="Recent deliveries kept per hook (`ame hooks list`).")
    public_url: str = Field(
        "",
        description="The REST URL senders reach (e.g. behind a proxy) for the hook URLs `ame hooks list` prints; "
        "empty: the REST server's own address.",
    )


class PeachSettings(BaseSettings):
    """PEACH task loops (`AME_PEACH_*`, seed 002): peach.yaml / peach.conf/*.yaml in a project's trigger version."""

    model_config = SettingsConfigDict(env_prefix="AME_PEACH_", extra="forbid")

    min_cycle_interval: Duration = Field(
        60.0,
        description="The shortest time (on the platform clock) from the end of a loop's cycle to the start of the "
        "next; a cycle that took longer is followed at once.",
    )
    poll_interval: Duration = Field(
        1.0, gt=0, description="How often each replica looks at the loops (run ends also wake it at once)."
    )
    spark_master: str = Field(
        "",
        max_length=500,
        description="A Spark master URL for `executor: spark` tasks (given to them as AME_SPARK_MASTER); empty: "
        "such tasks are reported as unsupported and not run.",
    )


class OrchestrationSettings(BaseSettings):
    """Orchestration uploads (`AME_ORCHESTRATIONS_*`, seed 004): the limits that refuse a zip bomb."""

    model_config = SettingsConfigDict(env_prefix="AME_ORCHESTRATIONS_", extra="forbid")

    max_zip_bytes: int = Field(256 * 1024**2, ge=1, description="Largest ZIP accepted, in bytes.")
    max_bytes: int = Field(_GIB, ge=1, description="Most bytes a ZIP may inflate to, all entries together.")
    max_files: int = Field(10_000, ge=1, description="Most entries a ZIP may hold.")
    max_ratio: int = Field(
        100, ge=1, description="Most an entry over 1 MiB may inflate (uncompressed / compressed size)."
    )
    run_token_ttl: Duration = Field(
        86_400.0,
        gt=0,
        description="Lifetime of the token a task run gets for `ame.Client()` when its task has no timeout.",
    )
    packaging_wait: Duration = Field(
        20.0,
        ge=0,
        description="How long starting a task waits for its orchestration's packaging to end before refusing "
        "(kept under clients' 30 s deadline).",
    )


class ApiSettings(BaseSettings):
    # Inputs stay out of errors: the bootstrap token and TLS key paths are settings too.
    model_config = SettingsConfigDict(env_prefix="AME_API_", extra="forbid", hide_input_in_errors=True)

    rest_host: str = Field("127.0.0.1", description="Address the REST server binds.")
    rest_port: int = Field(8080, ge=0, le=65535, description="REST port; 0 picks a free one.")
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain): REST and gRPC serve TLS only when this and the key are set."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    organisation: str = Field(
        "default", description="The server's own organisation: where server-admin tokens and schedule triggers act."
    )
    bootstrap_token: SecretStr | None = Field(
        None,
        min_length=20,
        description="A server-admin token accepted as is (a standalone deployment's first token; it cannot be "
        "revoked, only removed from settings). Unset: only tokens in the database are accepted.",
    )
    log_token_ttl: Duration = Field(
        300.0, description="Lifetime of a run-scoped token for following one run's logs from a browser."
    )
    list_page_size: int = Field(50, ge=1, le=1000, description="Default page size of run listings.")
    registry_concurrency: int = Field(32, ge=1, description="Run events applied to the registry at once.")
    outbox_retry_after: Duration = Field(
        2.0, description="Age after which the relay publishes an outbox message the fast path did not."
    )
    history_timeout: Duration = Field(
        1.0, description="How long a log follower waits for the logs service's archive before using the bus."
    )
    retry_after: int = Field(
        2, ge=1, le=3600, description="Seconds clients are told to wait (Retry-After) while the database is away."
    )
    # Retention (ame_api.retention): each part is off while its setting is unset.
    retention_interval: Duration = Field(3600.0, gt=0, description="How often the retention job runs.")
    retention_versions_after: Duration | None = Field(
        None,
        description="Remove project versions older than this (e.g. '30d'), except each project's latest and those "
        "a recent or unfinished run names; unset keeps every version.",
    )
    retention_blobs_after: Duration | None = Field(
        None,
        description="Remove blobs no version lists once they are this old (e.g. '1d': longer than any push "
        "takes); unset keeps them.",
    )
    retention_artifacts_after: Duration | None = Field(
        None, description="Remove the artifacts of runs that ended longer ago than this (e.g. '30d'); unset keeps them."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both AME_API_TLS_CERT_FILE and AME_API_TLS_KEY_FILE, or neither")
        return self

    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the liveness (/livez) and readiness (/readyz) probes, on all interfaces; unset: none.",
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    clock: ClockSettings = Field(default_factory=ClockSettings, description="The platform clock (AME_CLOCK_*).")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="The MLflow server (AME_MLFLOW_*).")
    schedule_queue_poll: Duration = Field(
        1.0, gt=0, description="How often a schedule slot queued behind its previous run (overlap: queue) looks again."
    )
    secrets: SecretsSettings = Field(default_factory=SecretsSettings, description="The secret store.")
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    peach: PeachSettings = Field(default_factory=PeachSettings)
    projectsrc: SourceSettings = Field(default_factory=SourceSettings, description="Git project sources.")
    orchestrations: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    # Project versions (ame project push).
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Where project blobs live.")
    project_max_bytes: int = Field(5 * _GIB, ge=1, description="Largest project version accepted, in bytes.")
    project_max_files: int = Field(100_000, ge=1, description="Most files a project version may hold.")
    project_spool_dir: Path | None = Field(
        None, description="Where uploads are checked before they enter the object store; unset: the system temp."
    )
