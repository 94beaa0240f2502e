"""Settings of the scheduler service (`AME_SCHEDULER_*`), composed with the platform's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_SCHEDULER_", extra="forbid")

    tick_interval: Duration = Field(1.0, description="How often due schedules are looked for.")
    catch_up_window: Duration = Field(
        3600.0, description="A slot older than this when first seen is recorded as missed instead of fired."
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
