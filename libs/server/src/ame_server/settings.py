"""Settings of the embedded server (`AME_SERVER_*`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration


def _default_data_dir() -> Path:
    home = os.environ.get("AME_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".ame") / "server"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_SERVER_", extra="forbid", validate_assignment=True)

    data_dir: Path = Field(default_factory=_default_data_dir, description="NATS, PostgreSQL and run data.")
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind.")
    rest_port: int = Field(8080, ge=0, le=65535, description="REST port; 0 picks a free one.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    nats_port: int | None = Field(None, ge=0, le=65535, description="NATS port; unset picks a free one.")
    postgres_port: int | None = Field(None, ge=0, le=65535, description="PostgreSQL port; unset picks one.")
    bus_prefix: str = Field("ame", description="Namespace of AME's streams and subjects on the embedded NATS.")
    backend: Literal["local", "kubernetes"] | None = Field(
        None,
        description="Where the launcher runs work: local process groups, or pods (AME_LAUNCHER_KUBERNETES_* "
        "and an S3 object store, AME_STORAGE_*); unset: AME_LAUNCHER_BACKEND, else local.",
    )
    graceful_timeout: Duration = Field(20.0, description="Budget for in-flight work on Ctrl-C.")
