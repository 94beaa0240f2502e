"""Two organisations with objects and tokens, for the isolation tests.

Organisation `default` (A) holds a project with a version, its blobs, a queued run and tokens of every scope;
organisation `orgb` (B) has an admin token and nothing else. Everything is made through the API, as users do,
with the test session's server-admin token.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field

import httpx

from ame.sdk import Client
from ame.sdk.credentials import bearer, discover_token

PROJECT = "proj"
AME_YML = b"""\
project: proj
tasks:
  - name: hello
    executor: !custom
      command: python hello.py
    triggers:
      webhook:
        secret: A_SECRET
models:
  - name: hello_model
    training:
      task:
        taskRef: hello
"""
DATA = b"print('hello from A')\n"
SECRET_NAME = "A_SECRET"
SECRET_VALUE = "a-secret-value-never-shown"
# A's git project source (never reached: `.invalid` does not resolve; its sync just ends in Error).
SOURCE_URL = "https://git.invalid/a/private-repo.git"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest() -> dict[str, object]:
    return {
        "files": [
            {"path": "ame.yml", "mode": 0o100644, "sha256": sha(AME_YML), "size": len(AME_YML)},
            {"path": "hello.py", "mode": 0o100644, "sha256": sha(DATA), "size": len(DATA)},
        ]
    }


@dataclass
class World:
    rest_url: str
    grpc_target: str
    server_admin: str
    a: dict[str, str] = field(default_factory=dict)  # scope -> token of organisation A
    a_token_ids: dict[str, str] = field(default_factory=dict)
    b_admin: str = ""
    b_token_id: str = ""
    run_id: str = ""
    version_id: str = ""
    secret_created_at: str = ""
    source_id: str = ""
    orchestration_id: str = ""
    orchestration_task_id: str = ""

    def ids(self) -> dict[str, str]:
        """What A's objects are called, by the path parameter names of the REST routes."""
        return {
            "run_id": self.run_id,
            "project": PROJECT,
            "sha256": sha(AME_YML),  # a blob B never uploads (B uploads DATA's bytes, as its own)
            "version_id": self.version_id,
            "token_id": self.a_token_ids["read"],
            "letter_id": "1",
            "org": "default",
            "name": SECRET_NAME,
            "path": "model.txt",
            "task": "hello",
            "source_id": self.source_id,
            "model": "hello_model",
        }

    def leaks(self, text: str, sent: str = "") -> list[str]:
        """Which of A's identifiers appear in `text` (a response to B), apart from those B sent itself (an error
        message may quote the request)."""
        secrets = [
            self.run_id,
            self.version_id,
            SECRET_VALUE,
            self.source_id,
            SOURCE_URL,
            self.orchestration_id,
            self.orchestration_task_id,
            *self.a_token_ids.values(),
            *self.a.values(),
        ]
        found = [s for s in secrets if s and s in text and s not in sent]
        if f'"{PROJECT}"' in text:
            found.append(PROJECT)
        return found


async def _ok(response: httpx.Response, *codes: int) -> dict[str, object]:
    assert response.status_code in (codes or (200, 201)), f"{response.request.url}: {response.text}"
    body: dict[str, object] = response.json()
    return body


async def create_token(
    client: httpx.AsyncClient, token: str, *, scope: str, organisation: str | None = None, expires: int | None = None
) -> tuple[str, str]:
    body: dict[str, object] = {"scope": scope, "name": f"isolation {scope}"}
    if organisation:
        body["organisation"] = organisation
    if expires:
        body["expires_in_seconds"] = expires
    created = await _ok(await client.post("/v1/tokens", json=body, headers=bearer(token)), 201)
    return str(created["token"]), str(created["id"])


async def build_world(rest_url: str, grpc_target: str) -> World:
    admin = discover_token()
    assert admin, "the test session sets AME_TOKEN"
    world = World(rest_url, grpc_target, admin)
    async with httpx.AsyncClient(base_url=rest_url, timeout=30) as client:
        await _ok(await client.post("/v1/organisations", json={"name": "orgb"}, headers=bearer(admin)), 201)
        for scope in ("read", "run", "admin"):
            world.a[scope], world.a_token_ids[scope] = await create_token(client, admin, scope=scope)
        world.b_admin, world.b_token_id = await create_token(client, admin, scope="admin", organisation="orgb")

        run = bearer(world.a["run"])
        missing = await _ok(await client.post(f"/v1/projects/{PROJECT}/missing-blobs", json=manifest(), headers=run))
        assert sorted(missing["missing"]) == sorted([sha(AME_YML), sha(DATA)])  # type: ignore[type-var]
        for data in (AME_YML, DATA):
            await _ok(await client.put(f"/v1/projects/{PROJECT}/blobs/{sha(data)}", content=data, headers=run), 201)
        version = await _ok(await client.post(f"/v1/projects/{PROJECT}/versions", json=manifest(), headers=run), 201)
        world.version_id = str(version["id"])
        # As `ame project push` does: the version's triggers (A's hook) go live.
        await _ok(await client.post(f"/v1/projects/{PROJECT}/versions/{world.version_id}/activate", headers=run), 200)
        spec = {"project": PROJECT, "task": "hello", "command": "true", "project_version_id": world.version_id}
        submitted = await _ok(await client.post("/v1/runs", json=spec, headers=run), 201)
        world.run_id = str(submitted["id"])
        secret = await _ok(
            await client.put(f"/v1/secrets/{SECRET_NAME}", json={"value": SECRET_VALUE}, headers=run), 201
        )
        world.secret_created_at = str(secret["created_at"])
        source = await _ok(
            await client.post(
                "/v1/projectsrc",
                json={"url": SOURCE_URL, "branch": "main", "secret": SECRET_NAME, "hook_secret": SECRET_NAME},
                headers=run,
            ),
            201,
        )
        world.source_id = str(source["id"])
        # A's model, trained from A's version: B's list of models must not show it.
        model = {"project": PROJECT, "project_version_id": world.version_id}
        await _ok(await client.post("/v1/models/hello_model/train", json=model, headers=run), 201)
    await asyncio.to_thread(_orchestration_of_a, world)
    return world


def orchestration_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", "print('orchestration of A')\n")
    return buffer.getvalue()


def _orchestration_of_a(world: World) -> None:
    """A's orchestration with a scheduled task (a yearly slot: nothing fires during the tests)."""
    with Client(world.grpc_target, token=world.a["run"]) as client:
        found = client.upload_orchestration_bytes("orch-of-a", "a.zip", iter([orchestration_zip()]))
        world.orchestration_id = found.id
        task = client.start_orchestration_task(
            found.id, name="yearly", json_args="{}", timeout=None, schedule="0 0 1 1 *"
        )
        world.orchestration_task_id = task.id


def dumps(value: object) -> str:
    return json.dumps(value, default=str)
