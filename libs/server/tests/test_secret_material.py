"""`ame server`'s secrets key and launcher credential: made once, 0600, kept across restarts, settings first."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ame_server.secret_material import FILE, secrets_settings


def test_generated_once_with_mode_0600_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AME_SECRETS_KEYS", "AME_SECRETS_ACTIVE_KEY", "AME_SECRETS_LAUNCHER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    first = secrets_settings(tmp_path)
    assert stat.S_IMODE((tmp_path / FILE).stat().st_mode) == 0o600
    assert first.active_key in first.keys
    assert len(first.key_bytes()[first.active_key or ""]) == 32
    assert first.launcher_token is not None and len(first.launcher_token.get_secret_value()) >= 32
    again = secrets_settings(tmp_path)
    assert again.key_bytes() == first.key_bytes()
    assert again.launcher_token == first.launcher_token


def test_settings_replace_the_generated_material(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("AME_SECRETS_KEYS", f'{{"mine": "{key}"}}')
    monkeypatch.setenv("AME_SECRETS_LAUNCHER_TOKEN", "configured-token")
    settings = secrets_settings(tmp_path)
    assert settings.active_key == "mine"
    assert settings.key_bytes() == {"mine": base64.b64decode(key)}
    assert settings.launcher_token is not None and settings.launcher_token.get_secret_value() == "configured-token"


def test_a_key_that_is_not_32_bytes_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from ame_api.secrets.settings import SecretsSettings

    short = base64.b64encode(b"sixteen-byte-key").decode()
    monkeypatch.setenv("AME_SECRETS_KEYS", f'{{"k": "{short}"}}')
    with pytest.raises(ValidationError) as refused:
        SecretsSettings()
    assert "32 bytes" in str(refused.value)
    assert short not in str(refused.value)
