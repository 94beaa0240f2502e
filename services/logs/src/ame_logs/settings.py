"""Settings of the logs service (`AME_LOGS_*`), composed with the platform's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings


class LogsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_LOGS_", extra="forbid")

    archive_concurrency: int = Field(16, ge=1, description="Log chunks archived at once.")
    history_page_lines: int = Field(20000, ge=1, description="Most lines in one history reply.")
    history_page_bytes: int = Field(
        768 * 1024,
        ge=70 * 1024,
        description="Most bytes of lines in one history reply (also kept under the NATS server's max_payload); "
        "at least one line of the longest kind (64 KiB) must fit.",
    )
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
