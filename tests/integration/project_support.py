"""Helpers for project-version tests: make a project directory, build its manifest, push it over REST or gRPC."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from ame.domain.projects import ManifestEntry
from ame.packaging import HashIndex, PushResult, build_manifest, push_project, scan_project
from ame.sdk import Client

AME_YML = """\
project: demo
tasks:
  - name: hello
    executor: !custom
      command: python hello.py
"""


def make_project(root: Path, files: int = 5, *, name: str = "demo") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ame.yml").write_text(AME_YML.replace("project: demo", f"project: {name}"))
    (root / "hello.py").write_text("print('hello')\n")
    for i in range(files):
        (root / "src" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (root / "src" / f"m{i}.py").write_text(f"VALUE = {i}\n" * (i + 1))
    return root


def manifest_of(root: Path) -> list[ManifestEntry]:
    entries, _ = build_manifest(scan_project(root), HashIndex(root.parent / "no-index.json"))
    return entries


def as_json(entries: list[ManifestEntry]) -> dict[str, object]:
    return {"files": [e.model_dump() for e in entries]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def rest_push(rest: httpx.AsyncClient, root: Path, project: str = "demo") -> httpx.Response:
    """Missing blobs, upload them, commit: the whole push over REST; returns the commit's response."""
    entries = manifest_of(root)
    missing = await rest.post(f"/v1/projects/{project}/missing-blobs", json=as_json(entries))
    assert missing.status_code == 200, missing.text
    paths = {e.sha256: e.path for e in entries}
    for digest in missing.json()["missing"]:
        data = (root / paths[digest]).read_bytes()
        put = await rest.put(f"/v1/projects/{project}/blobs/{digest}", content=data)
        assert put.status_code == 201, put.text
    return await rest.post(f"/v1/projects/{project}/versions", json=as_json(entries))


async def sdk_push(
    target: str, root: Path, cache: Path, project: str = "demo", *, activate: bool = False
) -> PushResult:
    """The CLI's push (gRPC, parallel streamed uploads), run off the event loop the stack serves on; with
    `activate`, what `ame project push` does next: the version's triggers (schedules, hooks) go live."""

    def push() -> PushResult:
        with Client(target) as client:
            result = push_project(root, project, client, cache_dir=cache)
            if activate:
                client.activate_version(project, result.version.id)
            return result

    return await asyncio.to_thread(push)
