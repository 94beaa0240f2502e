"""A test kubelet that really runs the pods an emulated API server holds.

It runs each pod's init containers and then its main container as local processes, with the pod's
environment (Secret references resolved), its volumes as directories (a Secret volume holds the Secret's
values as files; a PersistentVolumeClaim is one directory per claim, shared), and every path under a mount
rewritten to the directory that stands for it. It moves the pod through its phases by PATCHing the status,
as a kubelet does, and serves the containers' logs (`timestamps`, `sinceTime`, `follow`) through the
emulator's `pods/log`. Tests steer it: fail scheduling, OOM-kill or evict a pod, forget old log lines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock

from tests.k8s_fake import Emulator

_PODS = kmock.resource("", "v1", "pods")
_SECRETS = kmock.resource("", "v1", "secrets")


def rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def _parse(text: str) -> int:
    head, _, fraction = text.rstrip("Z").partition(".")
    seconds = int(datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


@dataclass
class ContainerLog:
    lines: list[tuple[int, str]] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Lines before this index were rotated away (a test's `forget_log`).
    first: int = 0

    def add(self, text: str) -> None:
        now = time.time_ns()
        if self.lines and now <= self.lines[-1][0]:
            now = self.lines[-1][0] + 1
        self.lines.append((now, text))
        self.changed.set()


@dataclass
class RunningPod:
    name: str
    logs: dict[str, ContainerLog] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    killed_as: tuple[str, str, str] | None = None  # (phase reason, container reason, message)
    deleted: bool = False


class TestKubelet:
    __test__ = False

    def __init__(self, km: Emulator, url: str, namespace: str, root: Path) -> None:
        self.km = km
        self.url = url
        self.namespace = namespace
        self.root = root
        self.node_labels: dict[str, str] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        self.gpus = 8
        self.schedulable = True
        self.unschedulable_message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        self.pods: dict[str, RunningPod] = {}
        # Images no registry has: their containers wait in ImagePullBackOff.
        self.unpullable: set[str] = set()
        # While clear, log streams send nothing new (a slow reader), so that lines can rotate away meanwhile.
        self.logs_flowing = asyncio.Event()
        self.logs_flowing.set()
        self.started: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.Task[None] | None = None
        km[_PODS, kmock.subresource("log")] << self._serve_log

    async def __aenter__(self) -> TestKubelet:
        self._session = aiohttp.ClientSession()
        self._loop = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        for pod in self.pods.values():
            await self._stop_process(pod, grace=0)
            if pod.task is not None:
                pod.task.cancel()
                await asyncio.gather(pod.task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # What tests do to pods ----------------------------------------------------------------------------------

    async def oom_kill(self, name: str) -> None:
        pod = self.pods[name]
        pod.killed_as = ("", "OOMKilled", "")
        await self._stop_process(pod, grace=0)

    async def evict(self, name: str, message: str = "The node was low on resource: memory.") -> None:
        pod = self.pods[name]
        pod.killed_as = ("Evicted", "Error", message)
        await self._stop_process(pod, grace=0)

    async def lose_node(self, name: str) -> None:
        """The pod's node goes away: its processes end and the pod object is deleted (as the pod GC does)."""
        pod = self.pods[name]
        pod.deleted = True
        await self._stop_process(pod, grace=0)
        assert self._session is not None
        async with self._session.delete(f"{self.url}/api/v1/namespaces/{self.namespace}/pods/{name}") as response:
            response.raise_for_status()

    def forget_log(self, name: str, keep_last: int) -> None:
        log = self.pods[name].logs["main"]
        log.first = max(log.first, len(log.lines) - keep_last)

    # The loop -----------------------------------------------------------------------------------------------

    def _objects(self, resource: Any) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for (res, namespace, name), obj in list(self.km.objects.items()):
            if res == resource and namespace == self.namespace and not obj.deleted:
                found[name] = obj.raw
        return found

    async def _run(self) -> None:
        while True:
            pods = self._objects(_PODS)
            for name, raw in pods.items():
                if name not in self.pods:
                    pod = self.pods[name] = RunningPod(name)
                    pod.task = asyncio.create_task(self._lifecycle(pod, raw))
            for name, pod in self.pods.items():
                if name not in pods and not pod.deleted:
                    pod.deleted = True
                    grace = 0
                    await self._stop_process(pod, grace=grace)
            await asyncio.sleep(0.02)  # the kubelet's own poll of the emulator's memory, not a test wait

    async def _patch_status(self, name: str, status: dict[str, Any]) -> None:
        assert self._session is not None
        url = f"{self.url}/api/v1/namespaces/{self.namespace}/pods/{name}/status"
        async with self._session.patch(
            url, json={"status": status}, headers={"Content-Type": "application/merge-patch+json"}
        ) as response:
            if response.status == 404:
                return
            response.raise_for_status()

    async def _lifecycle(self, pod: RunningPod, raw: dict[str, Any]) -> None:
        spec = raw.get("spec") or {}
        await self._patch_status(pod.name, {"phase": "Pending"})
        while not self._fits(spec):
            await self._patch_status(
                pod.name,
                {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": self.unschedulable_message,
                        }
                    ],
                },
            )
            for _ in range(50):
                if pod.deleted:
                    return
                await asyncio.sleep(0.02)
        scheduled = [{"type": "PodScheduled", "status": "True"}]
        await self._patch_status(pod.name, {"phase": "Pending", "conditions": scheduled})
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            if container["image"] in self.unpullable:
                waiting = {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{container["image"]}"',
                }
                key = (
                    "initContainerStatuses" if container in (spec.get("initContainers") or []) else "containerStatuses"
                )
                await self._patch_status(
                    pod.name,
                    {"phase": "Pending", key: [{"name": container["name"], "state": {"waiting": waiting}}]},
                )
                return
        mounts = await self._volumes(pod, spec)
        if mounts is None:
            return
        self.started.append(pod.name)
        deadline = spec.get("activeDeadlineSeconds")
        started_at = time.monotonic()
        for container in spec.get("initContainers") or []:
            code, _ = await self._run_container(pod, container, mounts, None)
            state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
            await self._patch_status(pod.name, {"initContainerStatuses": [{"name": container["name"], "state": state}]})
            if pod.deleted:
                return
            if code != 0:
                await self._patch_status(pod.name, {"phase": "Failed"})
                return
        main = spec["containers"][0]
        now = rfc3339(time.time_ns())
        await self._patch_status(
            pod.name,
            {
                "phase": "Running",
                "containerStatuses": [{"name": main["name"], "state": {"running": {"startedAt": now}}}],
            },
        )
        remaining = None if deadline is None else max(0.0, deadline - (time.monotonic() - started_at))
        code, timed_out = await self._run_container(pod, main, mounts, remaining)
        if pod.deleted:
            return
        finished = rfc3339(time.time_ns())
        terminated: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
        terminated["finishedAt"] = finished
        status: dict[str, Any] = {"phase": "Succeeded" if code == 0 else "Failed"}
        if timed_out:
            status.update(phase="Failed", reason="DeadlineExceeded", message="Pod was active longer than allowed")
        if pod.killed_as is not None:
            reason, container_reason, message = pod.killed_as
            terminated.update(reason=container_reason, exitCode=137)
            status["phase"] = "Failed"
            if reason:
                status.update(reason=reason, message=message)
        status["containerStatuses"] = [{"name": main["name"], "state": {"terminated": terminated}}]
        await self._patch_status(pod.name, status)

    def _fits(self, spec: dict[str, Any]) -> bool:
        if not self.schedulable:
            return False
        for key, value in (spec.get("nodeSelector") or {}).items():
            if self.node_labels.get(key) != value:
                return False
        for container in spec.get("containers") or []:
            gpus = int(((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", "0"))
            if gpus > self.gpus:
                return False
        return True

    async def _volumes(self, pod: RunningPod, spec: dict[str, Any]) -> dict[str, Path] | None:
        """Volume name -> directory; waits for the Secrets the pod mounts (None if deleted meanwhile)."""
        base = Path(tempfile.mkdtemp(prefix=f"{pod.name[:20]}-", dir=self.root))
        dirs: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            path = base / volume["name"]
            if "persistentVolumeClaim" in volume:
                path = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = await self._secret(pod, volume["secret"]["secretName"])
                if secret is None:
                    return None
                for key, value in secret.items():
                    (path / key).write_text(value)
            dirs[volume["name"]] = path
        return dirs

    async def _secret(self, pod: RunningPod, name: str) -> dict[str, str] | None:
        while not pod.deleted:
            secret = self._objects(_SECRETS).get(name)
            if secret is not None:
                values = dict(secret.get("stringData") or {})
                values.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
                return values
            await asyncio.sleep(0.02)
        return None

    async def _run_container(
        self, pod: RunningPod, container: dict[str, Any], volumes: dict[str, Path], deadline: float | None
    ) -> tuple[int, bool]:
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}

        def local(text: str) -> str:
            for mount, path in sorted(mounts.items(), key=lambda item: -len(item[0])):
                if text == mount or text.startswith(mount + "/"):
                    return str(path) + text[len(mount) :]
                text = text.replace(f" {mount}/", f" {path}/")
            return text

        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = local(var["value"])
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                secret = await self._secret(pod, ref["name"])
                env[var["name"]] = (secret or {}).get(ref["key"], "")
        command = [local(part) for part in container.get("command") or []]
        if command and command[0] == "python3":
            import sys

            command[0] = sys.executable
        workdir = local(container.get("workingDir") or str(self.root))
        Path(workdir).mkdir(parents=True, exist_ok=True)
        log = pod.logs.setdefault(container["name"], ContainerLog())
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        pod.process = process
        assert process.stdout is not None

        async def read() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                log.add(raw.decode("utf-8", "replace").rstrip("\n"))

        reader = asyncio.create_task(read())
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout=deadline)
        except TimeoutError:
            timed_out = True
            await self._stop_process(pod, grace=0)
            await process.wait()
        await reader
        log.done = True
        log.changed.set()
        pod.process = None
        return process.returncode or 0, timed_out

    async def _stop_process(self, pod: RunningPod, *, grace: float) -> None:
        process = pod.process
        if process is None or process.returncode is not None:
            for log in pod.logs.values():
                log.done = True
                log.changed.set()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        if grace:
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    # Logs ---------------------------------------------------------------------------------------------------

    def _serve_log(self, request: kmock.Request) -> Any:
        pod = self.pods.get(str(request.name))
        container = request.params.get("container", "main")
        if pod is None or container not in pod.logs:
            if pod is not None and request.params.get("follow", "").lower() != "true":
                return b""
            return kmock.Response(status=400, payload={"kind": "Status", "code": 400, "message": "waiting to start"})
        log = pod.logs[container]
        since = request.params.get("sinceTime")
        since_ns = _parse(since) // 1_000_000_000 * 1_000_000_000 if since else 0
        stamps = request.params.get("timestamps", "").lower() == "true"

        def render(ns: int, text: str) -> bytes:
            return ((rfc3339(ns) + " " if stamps else "") + text + "\n").encode()

        if request.params.get("follow", "").lower() != "true":
            return b"".join(render(ns, t) for ns, t in log.lines[log.first :] if ns >= since_ns) or b""

        async def stream() -> AsyncIterator[bytes]:
            yield b""
            index = log.first
            while True:
                await self.logs_flowing.wait()
                index = max(index, log.first)
                while index < len(log.lines):
                    ns, text = log.lines[index]
                    index += 1
                    if ns >= since_ns:
                        yield render(ns, text)
                if log.done:
                    return
                log.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(log.changed.wait(), timeout=0.5)

        return stream()
