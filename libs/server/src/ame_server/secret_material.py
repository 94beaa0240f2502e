"""The embedded server's secret-store key and launcher credential: generated on first start, kept in the data
directory with mode 0600, so that `ame server` stores secrets encrypted with nothing configured.

Settings win: AME_SECRETS_KEYS (with AME_SECRETS_ACTIVE_KEY) and AME_SECRETS_LAUNCHER_TOKEN replace what the file
holds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from ame_api.secrets.settings import SecretsSettings

FILE = "secrets-key.json"


def _generate() -> dict[str, object]:
    key_id = "k" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return {
        "keys": {key_id: base64.b64encode(secrets.token_bytes(32)).decode()},
        "active_key": key_id,
        "launcher_token": secrets.token_urlsafe(32),
    }


def load_or_create(data_dir: Path) -> dict[str, object]:
    path = data_dir / FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # tightened if someone loosened it
        return dict(json.loads(path.read_text()))
    material = _generate()
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(material, handle, indent=2)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return material


def secrets_settings(data_dir: Path) -> SecretsSettings:
    """AME_SECRETS_* as set, completed from the data directory's file."""
    configured = SecretsSettings()
    material = load_or_create(data_dir)
    update: dict[str, object] = {}
    if not configured.keys:
        keys = material.get("keys")
        if isinstance(keys, dict):
            update["keys"] = {str(k): SecretStr(str(v)) for k, v in keys.items()}
            update["active_key"] = material.get("active_key")
    if configured.launcher_token is None and isinstance(material.get("launcher_token"), str):
        update["launcher_token"] = SecretStr(str(material["launcher_token"]))
    if not update:
        return configured
    return SecretsSettings.model_validate({**configured.model_dump(), **update})
