"""Settings of the secret store (`AME_SECRETS_*`): encryption keys, the launcher credential, vaults."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class VaultConfig(BaseModel):
    """One HashiCorp Vault that `!vault` entries name: KV v2 under `mount`, a token or AppRole."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    address: str = Field(description="Base URL, e.g. https://vault.example.com:8200.")
    mount: str = Field("secret", description="Mount path of the KV v2 engine.")
    token: SecretStr | None = Field(None, description="A Vault token; or use AppRole (role_id and secret_id).")
    role_id: str | None = Field(None, description="AppRole role_id.")
    secret_id: SecretStr | None = Field(None, description="AppRole secret_id.")
    approle_mount: str = Field("approle", description="Mount path of the AppRole auth method.")
    namespace: str | None = Field(None, description="Vault Enterprise namespace, if any.")
    timeout: float = Field(10.0, gt=0, description="Seconds one request to Vault may take.")
    organisations: list[str] = Field(
        default_factory=list,
        description="The organisations whose runs may read this vault (its credentials are the server's, so a "
        "vault is never open to every organisation by default); empty: the server's own organisation only.",
    )

    @model_validator(mode="after")
    def _auth(self) -> VaultConfig:
        if self.token is None and not (self.role_id and self.secret_id):
            raise ValueError("a vault needs a token, or an AppRole role_id and secret_id")
        return self


class SecretsSettings(BaseSettings):
    # An invalid setting is reported without its input: the input is a key or a token.
    model_config = SettingsConfigDict(env_prefix="AME_SECRETS_", extra="forbid", hide_input_in_errors=True)

    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Encryption keys by id, each 32 bytes in base64, as JSON: {"k1": "base64..."}. Without a key, '
        "the store refuses to keep secrets (the embedded server generates one).",
    )
    active_key: str | None = Field(
        None, description="Id of the key new values are encrypted under; unset with one key: that one."
    )
    launcher_token: SecretStr | None = Field(
        None,
        description="The credential launchers present to resolve a run's secrets (AME_LAUNCHER_API_TOKEN on their "
        "side); unset: no launcher can resolve secrets.",
    )
    vaults: dict[str, VaultConfig] = Field(
        default_factory=dict, description="Vaults by the name `!vault` entries use, as JSON."
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, key in keys.items():
            if len(decode_key(key_id, key)) != 32:
                raise ValueError(f"secrets key {key_id!r} must be 32 bytes (AES-256), in base64")
        return keys

    @model_validator(mode="after")
    def _active(self) -> SecretsSettings:
        if self.active_key is None and len(self.keys) == 1:
            self.active_key = next(iter(self.keys))
        if self.keys and self.active_key not in self.keys:
            raise ValueError("AME_SECRETS_ACTIVE_KEY must name one of AME_SECRETS_KEYS")
        return self

    def key_bytes(self) -> dict[str, bytes]:
        return {key_id: decode_key(key_id, key) for key_id, key in self.keys.items()}


def decode_key(key_id: str, key: SecretStr) -> bytes:
    try:
        return base64.b64decode(key.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        # Never the key itself in the message.
        raise ValueError(f"secrets key {key_id!r} is not valid base64") from None
