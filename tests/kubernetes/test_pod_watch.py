"""The shared pod watch: a relist whose list predates a pod's creation does not report that pod deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ame_launcher.kubernetes import manifests
from ame_launcher.kubernetes.kubeapi import KubeApi
from ame_launcher.kubernetes.watcher import PodWatcher
from tests.kubernetes.conftest import Cluster, kubernetes_settings
from tests.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="session")]


class _SlowList(KubeApi):
    """Its list is taken at once but answered only once `answer` is set: a snapshot older than what came between."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.taken = asyncio.Event()
        self.answer = asyncio.Event()

    async def list_pods(self, selector: str = "") -> tuple[list[dict[str, Any]], str]:
        listed = await super().list_pods()
        self.taken.set()
        await self.answer.wait()
        return listed


def _pod(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {manifests.LABEL_MANAGED: manifests.MANAGED_BY}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
    }


async def test_a_relist_that_predates_a_create_does_not_mark_the_new_pod_deleted(cluster: Cluster) -> None:
    cluster.steer().schedulable = False  # the pods stay pending: only the watch's view of them matters here
    settings = kubernetes_settings(cluster)
    opened = await KubeApi.open(settings)
    api = _SlowList(opened._client, opened.namespace)
    watcher = PodWatcher(api, settings)
    try:
        made = watcher.subscribe("ame-made-1")
        gone = watcher.subscribe("ame-gone-1")
        await asyncio.wait_for(api.taken.wait(), timeout=15)
        # While the (empty) list is on its way: one pod is created and recorded, as the backend's launch does; another
        # is created, recorded and deleted again.
        made.update(await api.create_pod(_pod("ame-made-1", cluster.namespace)))
        gone.update(await api.create_pod(_pod("ame-gone-1", cluster.namespace)))
        await api.delete_pod("ame-gone-1", 0)
        api.answer.set()
        await wait_until(lambda: watcher.relists == 1, timeout=15, message="the relist to finish")
        assert not made.deleted
        assert made.pod is not None and made.pod["metadata"]["name"] == "ame-made-1"
        await wait_until(lambda: gone.deleted, timeout=15, message="the pod deleted since to be seen deleted")
    finally:
        await watcher.close()
        await api.close()
