"""Settings of the scheduler service (`AME_SCHEDULER_*`), composed with the platform's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration
from ame_platform.clock import ClockSettings
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_SCHEDULER_", extra="forbid")

    tick_interval: Duration = Field(1.0, description="How often due schedules are looked for.")
    late_after: Duration = Field(
        60.0,
        description="A slot older than this (on the platform clock) when first handled was missed while no "
        "scheduler ran; the schedule's catchUp policy says whether it still fires.",
    )
    catch_up_max: int = Field(100, ge=0, description="The most missed slots `catchUp: all` fires per schedule.")
    # Large enough that a burst of due slots (10,000 in a minute over 3 replicas) is recorded in one batch per
    # replica before any of it is published: with smaller batches the publishing of the first batches (and the
    # api's work on them) competes with recording the next, and the last fires are recorded seconds late
    # (bench/bench_schedules.py: p99 2.3 s with 1000, 0.5 s with 4000 on a quiet 2-core machine).
    tick_batch: int = Field(
        4000, ge=1, description="Schedules claimed per transaction; a tick takes batches until none is due."
    )
    publish_concurrency: int = Field(256, ge=1, description="ScheduleFired publishes in flight at once.")
    relay_interval: Duration = Field(
        2.0, gt=0, description="How often fires that a replica recorded but did not publish are looked for."
    )
    relay_after: Duration = Field(
        10.0, gt=0, description="How long a recorded fire may stay unpublished before another replica publishes it."
    )
    retry_backoff: Duration = Field(
        2.0, gt=0, description="How long after an attempt failed, timed out or was lost its first retry starts."
    )
    retry_backoff_factor: float = Field(
        2.0, ge=1.0, description="Each further retry of a run waits this many times longer than the one before."
    )
    retry_backoff_max: Duration = Field(300.0, gt=0, description="The longest wait before a retry.")
    retry_poll_interval: Duration = Field(
        0.5, gt=0, description="How often retries whose backoff is over are looked for and launched."
    )
    pipeline_concurrency: int = Field(
        32, ge=1, description="Run events each replica's pipeline coordinator handles at once."
    )
    pipeline_relay_interval: Duration = Field(
        1.0, gt=0, description="How often pipeline messages a replica decided but did not publish are looked for."
    )
    pipeline_relay_after: Duration = Field(
        5.0, gt=0, description="How long a decided pipeline message may stay unpublished before the relay sends it."
    )
    clock: ClockSettings = Field(default_factory=ClockSettings)
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
