"""The Kubernetes API emulator (kmock, pinned) with the two shims of the reliability notes §3.2, and a kubeconfig
that points kubernetes-asyncio at it.

kmock ignores label selectors and resource versions, so every test gets its own emulator (hence its own
namespace). The shims touch kmock's private modules, which is why they live here alone and kmock is pinned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kmock._internal.parsing as kparsing
from kmock._internal import enums

_original_guess = kparsing.guess_k8s


def _guess(k8s: Any, method: Any, query: Any) -> Any:
    # Real API servers read the watch flag case-insensitively; kubernetes-asyncio sends `watch=True`.
    q = dict(query)
    if str(q.get("watch", "")).lower() in ("true", "1"):
        q["watch"] = "true"
    return _original_guess(k8s, method, q)


kparsing.guess_k8s = _guess


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """The API server fills metadata.namespace from the URL, and metadata.uid and creationTimestamp."""

    async def _handle(self, request: Any) -> Any:
        if request.action == enums.action.CREATE and request.namespace and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
        return await super()._handle(request)


def write_kubeconfig(path: Path, server: str, namespace: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "emulator"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


@asynccontextmanager
async def emulator() -> AsyncIterator[tuple[Emulator, str]]:
    """A fresh emulator and its URL."""
    async with Emulator() as km, kmock.Server(km) as server:
        yield km, str(server.url).rstrip("/")
