"""A small HashiCorp Vault KV v2 server for tests (no Vault can be installed here), or a real Vault.

It answers what AME's client uses: `GET /v1/<mount>/data/<path>` and `POST` of the same (to seed), with the
`X-Vault-Token` header checked, and `POST /v1/auth/approle/login`. With AME_TEST_VAULT_ADDR (and
AME_TEST_VAULT_TOKEN) set, the same tests run against that Vault instead.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest


@dataclass
class Vault:
    address: str
    token: str
    mount: str = "secret"
    role_id: str | None = None
    secret_id: str | None = None

    def put(self, path: str, data: dict[str, str]) -> None:
        response = httpx.post(
            f"{self.address}/v1/{self.mount}/data/{path}", json={"data": data}, headers={"X-Vault-Token": self.token}
        )
        response.raise_for_status()


@dataclass
class _State:
    root_token: str
    role_id: str
    secret_id: str
    tokens: set[str] = field(default_factory=set)
    data: dict[str, dict[str, str]] = field(default_factory=dict)


def _handler(state: _State, mount: str) -> type[BaseHTTPRequestHandler]:
    prefix = f"/v1/{mount}/data/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> dict[str, object]:
            return dict(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))

        def do_POST(self) -> None:
            if self.path == "/v1/auth/approle/login":
                body = self._body()
                if (body.get("role_id"), body.get("secret_id")) != (state.role_id, state.secret_id):
                    return self._answer(400, {"errors": ["invalid role or secret ID"]})
                token = secrets.token_hex(12)
                state.tokens.add(token)
                return self._answer(200, {"auth": {"client_token": token, "lease_duration": 3600}})
            if self.headers.get("X-Vault-Token") not in state.tokens or not self.path.startswith(prefix):
                return self._answer(403, {"errors": ["permission denied"]})
            data = self._body().get("data")
            state.data[self.path.removeprefix(prefix)] = dict(data) if isinstance(data, dict) else {}
            return self._answer(200, {"data": {"version": 1}})

        def do_GET(self) -> None:
            if self.headers.get("X-Vault-Token") not in state.tokens:
                return self._answer(403, {"errors": ["permission denied"]})
            found = state.data.get(self.path.removeprefix(prefix)) if self.path.startswith(prefix) else None
            if found is None:
                return self._answer(404, {"errors": []})
            return self._answer(200, {"data": {"data": found, "metadata": {"version": 1}}})

    return Handler


@pytest.fixture(scope="session")
def vault() -> Iterator[Vault]:
    """A KV v2 server: AME_TEST_VAULT_ADDR's when set, else this harness's (with AppRole)."""
    if address := os.environ.get("AME_TEST_VAULT_ADDR"):
        yield Vault(
            address,
            os.environ.get("AME_TEST_VAULT_TOKEN", ""),
            os.environ.get("AME_TEST_VAULT_MOUNT", "secret"),
            os.environ.get("AME_TEST_VAULT_ROLE_ID"),
            os.environ.get("AME_TEST_VAULT_SECRET_ID"),
        )
        return
    state = _State(secrets.token_hex(12), secrets.token_hex(8), secrets.token_hex(8))
    state.tokens.add(state.root_token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, "secret"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Vault(
            f"http://127.0.0.1:{server.server_port}", state.root_token, "secret", state.role_id, state.secret_id
        )
    finally:
        server.shutdown()
        server.server_close()
