"""Where the CLI and SDK find the endpoint and the token: environment, `ame setup`/`ame login`, the local server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ame.sdk import credentials


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for name in ("AME_TOKEN", "AME_GRPC_TARGET", "AME_REST_URL", "AME_GRPC_TLS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    config, home = tmp_path / "config", tmp_path / "home"
    monkeypatch.setenv("AME_CONFIG_DIR", str(config))
    monkeypatch.setenv("AME_HOME", str(home))
    return config, home / "server"


def _local_server(server: Path, token: str) -> None:
    server.mkdir(parents=True)
    (server / "server.json").write_text(json.dumps({"grpc_target": "127.0.0.1:6001", "rest_url": "http://l:6002"}))
    (server / "admin-token").write_text(token + "\n")


def test_the_local_server_is_used_when_nothing_is_set_up(dirs: tuple[Path, Path]) -> None:
    _, server = dirs
    assert credentials.discover_token() is None
    assert credentials.discover_target() == credentials.DEFAULT_TARGET
    _local_server(server, "ame_local")
    assert credentials.discover_target() == "127.0.0.1:6001"
    assert credentials.discover_rest_url() == "http://l:6002"
    assert credentials.discover_token() == "ame_local"


def test_login_and_environment_come_first(dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    config, server = dirs
    _local_server(server, "ame_local")
    saved = credentials.save_token("ame_saved")
    assert saved == config / "token" and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert credentials.discover_token() == "ame_saved"
    monkeypatch.setenv("AME_TOKEN", "ame_env")
    assert credentials.discover_token() == "ame_env"


def test_a_set_up_server_is_never_sent_the_local_token(dirs: tuple[Path, Path]) -> None:
    _, server = dirs
    _local_server(server, "ame_local")
    path = credentials.save_endpoint("remote:50051", "https://remote:8080/", tls=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.discover_target() == "remote:50051"
    assert credentials.discover_rest_url() == "https://remote:8080"
    assert credentials.grpc_tls() is True
    assert credentials.discover_token() is None


def test_the_config_directory_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AME_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert credentials.config_dir() == tmp_path / "xdg" / "ame"
