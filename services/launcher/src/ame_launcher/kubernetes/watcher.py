"""One watch over the namespace's AME pods, shared by every run of the launcher.

Runs wait on the latest state of their pod, not on events: a pod's status says where it got, so whatever
events a dropped watch missed, the next state seen (from the resumed watch or from a relist) still tells it.
The watch resumes from the last resourceVersion seen; a 410 Gone (that version is too old) or any other error
relists the pods and starts again from the list's version. A pod missing from a relist has been deleted, unless
its state was set after the list was asked for (a pod just created: the list may predate it); then a read of
the pod decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ame_launcher.kubernetes.kubeapi import KubeApi
from ame_launcher.kubernetes.settings import KubernetesSettings

log = logging.getLogger(__name__)


class PodState:
    """The latest state of one pod: `pod` (None once deleted), an event set at every change, and when it was last
    set (monotonic seconds), which says whether a list snapshot may predate it."""

    def __init__(self) -> None:
        self.pod: dict[str, Any] | None = None
        self.deleted = False
        self.changed = asyncio.Event()
        self.updated_at = 0.0

    def update(self, pod: dict[str, Any] | None) -> None:
        self.updated_at = time.monotonic()
        if pod is None:
            self.deleted = True
        else:
            self.pod = pod
            self.deleted = False
        self.changed.set()


class PodWatcher:
    def __init__(self, api: KubeApi, settings: KubernetesSettings) -> None:
        self._api = api
        self._settings = settings
        self._states: dict[str, PodState] = {}
        self._task: asyncio.Task[None] | None = None
        self._version = ""
        self.relists = 0
        self.events = 0

    def subscribe(self, name: str) -> PodState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = PodState()
        self._ensure_running()
        return state

    def unsubscribe(self, name: str) -> None:
        self._states.pop(name, None)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="kubernetes-pod-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _relist(self) -> None:
        asked_at = time.monotonic()
        pods, version = await self._api.list_pods()
        self.relists += 1
        present = {pod["metadata"]["name"]: pod for pod in pods}
        for name, state in list(self._states.items()):
            pod = present.get(name)
            if pod is not None:
                state.update(pod)
            elif state.updated_at < asked_at:
                state.update(None)
            else:
                # Set (created, read) after the list was asked for, which may not show it: only a read of the pod
                # itself says whether it went since (the watch resumes after the list, so would not tell).
                state.update(await self._api.read_pod(name))
        self._version = version if version not in ("", "...") else ""

    async def _run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for event in self._api.watch_pods(self._version, self._settings.watch_timeout):
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        # 410 Gone: the version is older than the server keeps. Anything else: start over too.
                        log.info("pod watch: %s; relisting", obj.get("message") or obj.get("reason") or obj)
                        need_list = True
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._version = str(version)
                    if kind == "BOOKMARK":
                        continue
                    self.events += 1
                    name = (obj.get("metadata") or {}).get("name")
                    state = self._states.get(name) if name else None
                    if state is not None:
                        state.update(None if kind == "DELETED" else obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A dropped connection, a 410 raised as an error, a server error: relist after a pause.
                log.info("pod watch interrupted (%s); relisting", exc)
                need_list = True
                await asyncio.sleep(self._settings.reconnect_delay)
                continue
            if not need_list and not self._states:
                # Nobody waits; stop until the next run subscribes.
                return
