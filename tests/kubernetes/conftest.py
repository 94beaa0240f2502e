"""A cluster for the kubernetes backend's tests: the API emulator and the test kubelet, one pair per test; or,
with AME_TEST_KUBECONFIG set, a real cluster (its namespace from AME_TEST_KUBERNETES_NAMESPACE, default
`ame-test`), where the tests that steer the kubelet are skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from ame_launcher.kubernetes.settings import KubernetesSettings
from ame_platform.storage import StorageSettings
from tests.k8s_fake import Emulator, emulator, write_kubeconfig
from tests.k8s_kubelet import TestKubelet

REAL_KUBECONFIG = os.environ.get("AME_TEST_KUBECONFIG")


@dataclass
class Cluster:
    kubeconfig: Path
    namespace: str
    km: Emulator | None = None
    kubelet: TestKubelet | None = None

    def steer(self) -> TestKubelet:
        """The test kubelet, for tests that make pods fail on purpose (skipped on a real cluster)."""
        if self.kubelet is None:
            pytest.skip("steers the test kubelet; not possible on a real cluster")
        return self.kubelet


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if REAL_KUBECONFIG:
        yield Cluster(Path(REAL_KUBECONFIG), os.environ.get("AME_TEST_KUBERNETES_NAMESPACE", "ame-test"))
        return
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "kubelet"
    root.mkdir()
    async with emulator() as (km, url):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig.json", url, namespace)
        async with TestKubelet(km, url, namespace, root) as kubelet:
            yield Cluster(kubeconfig, namespace, km, kubelet)


def kubernetes_settings(cluster: Cluster, **overrides: object) -> KubernetesSettings:
    return KubernetesSettings(
        kubeconfig=cluster.kubeconfig,
        namespace=cluster.namespace,
        reconnect_delay=0.1,
        quota_retry_interval=0.2,
        watch_timeout=30.0,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def api_storage(s3_settings: StorageSettings) -> StorageSettings:
    # Pods fetch their files through presigned URLs: the object store is S3 (moto).
    return s3_settings


@pytest.fixture
def kubernetes_overrides() -> dict[str, object]:
    return {}


@pytest.fixture
def launcher_overrides(cluster: Cluster, kubernetes_overrides: dict[str, object]) -> dict[str, object]:
    return {
        "backend": "kubernetes",
        "kubernetes": kubernetes_settings(cluster, **kubernetes_overrides),
    }
