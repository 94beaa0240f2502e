"""Settings shared by every service, one class per concern.

Each class reads its own `AME_<AREA>_` variables. A service composes the ones it needs into its own settings
class, builds it once in `main()` (so a bad value fails the start with a clear message) and passes it down;
nothing here is read at import time.
"""

from __future__ import annotations

import re
import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration

_PREFIX = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class NatsSettings(BaseSettings):
    """How to reach NATS JetStream and how AME's streams are sized."""

    model_config = SettingsConfigDict(env_prefix="AME_NATS_", extra="forbid")

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    prefix: str = Field(
        "ame",
        description="Namespace for AME's streams and subjects, so several AME installations (or tests) can share "
        "one NATS cluster.",
    )
    connect_timeout: Duration = Field(5.0, description="Time allowed to connect at start.")
    duplicate_window: Duration = Field(
        120.0, description="How long JetStream remembers Nats-Msg-Id values to drop duplicate publishes."
    )
    events_max_age: Duration = Field(7 * 86400.0, description="How long run events stay in the events stream.")
    logs_max_age: Duration = Field(
        86400.0,
        description="How long live log chunks stay on the bus; the logs service archives them durably.",
    )
    logs_max_bytes: int = Field(1 << 30, description="Size cap of the live logs stream, in bytes.")
    replicas: int = Field(1, description="JetStream replicas for AME's streams (3 on a production cluster).")
    max_failures: int = Field(
        5,
        ge=1,
        description="How often a consumer may fail on one message with a permanent error (a data error, an "
        "unexpected exception) before the message is dead-lettered. Transient faults (NATS or PostgreSQL away) "
        "are retried without limit and do not count.",
    )
    deadletter_max_age: Duration = Field(
        30 * 86400.0, description="How long dead-lettered messages are kept for inspection and replay."
    )

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("must be lowercase letters, digits, '-' or '_', starting with a letter (max 32)")
        return value


class PostgresSettings(BaseSettings):
    """The PostgreSQL database and the connection pool."""

    model_config = SettingsConfigDict(env_prefix="AME_POSTGRES_", extra="forbid")

    dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/ame"),
        description="libpq connection string; it may hold a password, so it is never printed.",
    )
    pool_min_size: int = Field(1, ge=0, description="Connections opened at start.")
    pool_max_size: int = Field(10, ge=1, description="Most connections the pool holds.")
    command_timeout: Duration = Field(30.0, description="Longest a single statement may take.")


class TelemetrySettings(BaseSettings):
    """OpenTelemetry tracing."""

    model_config = SettingsConfigDict(env_prefix="AME_OTEL_", extra="forbid")

    exporter: Literal["none", "console", "memory"] = Field(
        "none",
        description="Where spans go: nowhere (context is still propagated), stdout, or memory (tests).",
    )


class LifecycleSettings(BaseSettings):
    """Start and stop behaviour of a service process."""

    model_config = SettingsConfigDict(env_prefix="AME_LIFECYCLE_", extra="forbid")

    graceful_timeout: Duration = Field(
        20.0,
        description="On SIGTERM, how long in-flight work may take to finish before it is cancelled. Keep it "
        "below the pod's terminationGracePeriodSeconds.",
    )
    instance_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        description="This replica's name in leases and events (the pod name on Kubernetes).",
    )
    restart_max_failures: int = Field(
        5,
        ge=1,
        description="A component (consumer, loop, server) whose task fails is restarted with backoff; this many "
        "failures within `restart_window` is a crash loop, and the process stops.",
    )
    restart_window: Duration = Field(300.0, description="The window in which component failures are counted.")
    restart_max_delay: Duration = Field(30.0, description="Longest wait before restarting a failed component.")
