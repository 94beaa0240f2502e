"""The MLflow tracking server AME's runs use, when the server has one (`AME_MLFLOW_TRACKING_URI`).

The launcher hands it to every run as `MLFLOW_TRACKING_URI`; the api reads the registry through it to link a model
version to the MLflow registry version its training run registered.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MlflowSettings(BaseSettings):
    """`AME_MLFLOW_*`: shared by the api and the launcher (give both the same value)."""

    model_config = SettingsConfigDict(env_prefix="AME_MLFLOW_", extra="forbid")

    tracking_uri: str | None = Field(
        None,
        max_length=2000,
        description="The MLflow tracking server (http(s)://host:port). Runs get it as MLFLOW_TRACKING_URI; unset: "
        "runs get none and model versions are not linked to an MLflow registry.",
    )
    timeout: float = Field(5.0, gt=0, le=120, description="Seconds for one call to the MLflow server.")
