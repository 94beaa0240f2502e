"""Where AME keeps blobs (archived logs, artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "password"})
_MIB = 1024 * 1024


class StorageSettings(BaseSettings):
    """Object store: a local directory (dev, single node) or an S3-compatible bucket."""

    model_config = SettingsConfigDict(env_prefix="AME_STORAGE_", extra="forbid")

    backend: Literal["local", "s3"] = Field("local", description="Which object store to use.")
    local_root: Path = Field(Path(".ame/objects"), description="Directory holding the objects when backend is 'local'.")
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, Ceph, ...); unset means AWS for the region."
    )
    s3_bucket: str = Field("ame", description="Bucket holding AME's objects.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(
        None,
        description="Access key; unset means the standard AWS credential chain (env, profile, IAM role).",
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret key paired with the access key.")
    s3_create_bucket: bool = Field(
        False,
        description="Create the bucket at start if it is missing (dev and tests; production buckets are provisioned).",
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="Bucket addressing; most self-hosted S3 servers need 'path'."
    )
    s3_multipart_threshold: int = Field(
        8 * _MIB, ge=5 * _MIB, description="Files at least this large are uploaded in parts, in bytes."
    )
    s3_multipart_chunksize: int = Field(
        8 * _MIB,
        ge=5 * _MIB,
        description="Part size for multipart uploads, in bytes (S3's minimum is 5 MiB).",
    )

    @model_validator(mode="after")
    def _credentials_complete(self) -> Self:
        has_key = self.s3_access_key_id is not None
        has_secret = self.s3_secret_access_key is not None
        if has_key != has_secret:
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else ""
        if secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("s3_secret_access_key is a placeholder; set the real secret")
        return self
