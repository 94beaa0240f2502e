"""Where the CLI and the SDK find the server and the token they send, and how they send it.

Endpoint: `AME_GRPC_TARGET` / `AME_REST_URL`, else what `ame setup URL` saved in the config directory, else what a
local `ame server` wrote into its data directory (`$AME_HOME/server/server.json`), else the default port.

Token: `AME_TOKEN`, else what `ame login` saved (`<config dir>/token`, mode 0600), else, when no endpoint was set
up (so the server is the local one), the token the local `ame server` wrote on its first start
(`$AME_HOME/server/admin-token`, mode 0600). A set-up remote server is never sent the local server's token.

The config directory is `$AME_CONFIG_DIR`, else `${XDG_CONFIG_HOME:-~/.config}/ame`.

TLS: gRPC speaks TLS when `AME_GRPC_TLS` is true or `ame setup` saved an https URL; REST when its URL is
https. `AME_TLS_CA_FILE` names a PEM bundle to trust instead of the system's (a self-signed server).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_REST_URL = "http://127.0.0.1:8080"
CONFIG_FILE = "config.json"
TOKEN_FILE = "token"
SERVER_TOKEN_FILE = "admin-token"


def config_dir() -> Path:
    if explicit := os.environ.get("AME_CONFIG_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "ame"


def local_server_dir() -> Path:
    return Path(os.environ.get("AME_HOME") or Path.home() / ".ame").expanduser() / "server"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def saved_config() -> dict[str, Any]:
    """What `ame setup` saved: {"grpc_target": ..., "rest_url": ...}, or {}."""
    return _read_json(config_dir() / CONFIG_FILE)


def configured_target() -> str | None:
    """The server this machine is set up for (AME_GRPC_TARGET, `ame setup`, a local `ame server`), or None."""
    if target := os.environ.get("AME_GRPC_TARGET"):
        return target
    if target := saved_config().get("grpc_target"):
        return str(target)
    found = _read_json(local_server_dir() / "server.json").get("grpc_target")
    return str(found) if found else None


def discover_target() -> str:
    return configured_target() or DEFAULT_TARGET


def discover_rest_url() -> str:
    if url := os.environ.get("AME_REST_URL"):
        return url.rstrip("/")
    if url := saved_config().get("rest_url"):
        return str(url).rstrip("/")
    return str(_read_json(local_server_dir() / "server.json").get("rest_url") or DEFAULT_REST_URL).rstrip("/")


def grpc_tls() -> bool:
    if (value := os.environ.get("AME_GRPC_TLS")) is not None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(saved_config().get("grpc_tls"))


def tls_ca_file() -> Path | None:
    value = os.environ.get("AME_TLS_CA_FILE")
    return Path(value).expanduser() if value else None


def http_verify() -> ssl.SSLContext | bool:
    """httpx's `verify`: a context trusting the CA bundle named, or the system's."""
    ca = tls_ca_file()
    return ssl.create_default_context(cafile=str(ca)) if ca else True


def _grpc_credentials() -> grpc.ChannelCredentials:
    ca = tls_ca_file()
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes() if ca else None)


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def discover_token() -> str | None:
    if token := os.environ.get("AME_TOKEN"):
        return token
    if token := _read_token(config_dir() / TOKEN_FILE):
        return token
    if saved_config().get("grpc_target") or saved_config().get("rest_url"):
        return None
    return _read_token(local_server_dir() / SERVER_TOKEN_FILE)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (0600 from its creation, never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temp, path)


def save_token(token: str) -> Path:
    path = config_dir() / TOKEN_FILE
    write_private(path, token + "\n")
    return path


def save_endpoint(grpc_target: str, rest_url: str, *, tls: bool = False) -> Path:
    path = config_dir() / CONFIG_FILE
    config = saved_config()
    config.update({"grpc_target": grpc_target, "rest_url": rest_url.rstrip("/"), "grpc_tls": tls})
    write_private(path, json.dumps(config, indent=2) + "\n")
    return path


def bearer(token: str | None) -> dict[str, str]:
    """HTTP headers carrying the token (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _with_token(details: Any, token: str) -> Any:
    metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
    metadata.append(("authorization", f"Bearer {token}"))
    return details._replace(metadata=metadata)


class BearerAuth(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a (synchronous) channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]) -> Any:
        return continuation(_with_token(details, self._token), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]) -> Any:
        return continuation(_with_token(details, self._token), requests)


def authenticated_channel(target: str, token: str | None, *, tls: bool | None = None, **kwargs: Any) -> grpc.Channel:
    """A channel to `target` whose every call carries the token; TLS as `grpc_tls()` says unless `tls` is given."""
    use_tls = grpc_tls() if tls is None else tls
    if use_tls:
        channel = grpc.secure_channel(target, _grpc_credentials(), **kwargs)
    else:
        channel = grpc.insecure_channel(target, **kwargs)
    return grpc.intercept_channel(channel, BearerAuth(token)) if token else channel


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


def aio_channel(target: str, token: str | None, *, tls: bool | None = None, **kwargs: Any) -> grpc.aio.Channel:
    """A grpc.aio channel whose every call carries the token (none without one)."""
    interceptors: list[grpc.aio.ClientInterceptor] = []
    if token:
        interceptors = [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
    if grpc_tls() if tls is None else tls:
        return grpc.aio.secure_channel(target, _grpc_credentials(), interceptors=interceptors, **kwargs)
    return grpc.aio.insecure_channel(target, interceptors=interceptors, **kwargs)
