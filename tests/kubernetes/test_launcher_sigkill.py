"""A launcher SIGKILLed mid-run and started again adopts the run's pod: the run ends `succeeded` with its whole
log, each line once, and its pod was created once. The launcher runs as a process of its own here (the other
services in-process), so that it can really be killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from ame.contracts.run.v1 import run_pb2
from ame_api import app as api_app
from ame_api.settings import ApiSettings
from ame_logs import app as logs_app
from ame_logs.settings import LogsSettings
from ame_platform.lifecycle import Supervisor, run_components
from ame_platform.runtime import open_runtime
from ame_platform.settings import LifecycleSettings, NatsSettings, PostgresSettings, TelemetrySettings
from ame_platform.storage import StorageSettings
from ame_scheduler import app as scheduler_app
from ame_scheduler.settings import SchedulerSettings
from ame_server.server import migrate_all
from tests.integration.clients import Grpc
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.test_pods import finished
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

LINES = 60


@pytest_asyncio.fixture(loop_scope="session")
async def services(nats_url: str, pg_dsn: str, bus_prefix: str) -> AsyncIterator[str]:
    """api, logs and scheduler in-process, no launcher; yields the api's gRPC target."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=10)
    shared: dict[str, object] = {
        "nats": nats,
        "postgres": postgres,
        "telemetry": TelemetrySettings(exporter="memory"),
        "lifecycle": LifecycleSettings(graceful_timeout=5.0),
    }
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as runtime:
        api = api_app.build(ApiSettings(rest_port=0, grpc_port=0, **shared), runtime)  # type: ignore[arg-type]
        components = [
            *logs_app.build_components(LogsSettings(**shared), runtime),  # type: ignore[arg-type]
            *scheduler_app.build_components(SchedulerSettings(**shared), runtime),  # type: ignore[arg-type]
            *api.components,
        ]
        supervisor = Supervisor()
        ready = asyncio.Event()

        async def on_ready() -> None:
            ready.set()

        task = asyncio.create_task(
            run_components(components, graceful_timeout=5.0, supervisor=supervisor, on_ready=on_ready())
        )
        await asyncio.wait_for(ready.wait(), timeout=30)
        try:
            yield api.grpc.target
        finally:
            supervisor.stop.set()
            await task


def _launcher(
    nats_url: str, bus_prefix: str, pg_dsn: str, storage: StorageSettings, cluster: Cluster, log: Path
) -> subprocess.Popen[bytes]:
    assert storage.s3_secret_access_key is not None
    env = {
        **os.environ,
        "AME_NATS_URL": nats_url,
        "AME_NATS_PREFIX": bus_prefix,
        "AME_POSTGRES_DSN": pg_dsn,
        "AME_STORAGE_BACKEND": "s3",
        "AME_STORAGE_S3_ENDPOINT_URL": storage.s3_endpoint_url or "",
        "AME_STORAGE_S3_BUCKET": storage.s3_bucket,
        "AME_STORAGE_S3_REGION": storage.s3_region,
        "AME_STORAGE_S3_ACCESS_KEY_ID": storage.s3_access_key_id or "",
        "AME_STORAGE_S3_SECRET_ACCESS_KEY": storage.s3_secret_access_key.get_secret_value(),
        "AME_STORAGE_S3_ADDRESSING_STYLE": storage.s3_addressing_style,
        "AME_STORAGE_S3_CREATE_BUCKET": "true",
        "AME_LAUNCHER_BACKEND": "kubernetes",
        "AME_LAUNCHER_KUBERNETES_KUBECONFIG": str(cluster.kubeconfig),
        "AME_LAUNCHER_KUBERNETES_NAMESPACE": cluster.namespace,
        "AME_LAUNCHER_KUBERNETES_RECONNECT_DELAY": "0.1",
        "AME_LAUNCHER_LEASE_TTL": "2",
        "AME_LAUNCHER_HEARTBEAT_INTERVAL": "0.3",
        "AME_LAUNCHER_RECONCILE_INTERVAL": "0.3",
        "AME_LAUNCHER_RECONCILE_GRACE": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ame_launcher", "serve"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


async def test_a_launcher_killed_mid_run_and_restarted_adopts_the_pod(
    services: str,
    nats_url: str,
    bus_prefix: str,
    pg_dsn: str,
    s3_settings: StorageSettings,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    kubelet = cluster.steer()
    log = tmp_path / "launcher.log"
    first = _launcher(nats_url, bus_prefix, pg_dsn, s3_settings, cluster, log)
    client = Grpc(services)
    try:
        run = await client.submit(f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done")
        pod = f"ame-{run.id}-1"

        def printed() -> bool:
            state = kubelet.pods.get(pod)
            return state is not None and "main" in state.logs and len(state.logs["main"].lines) >= 5

        await wait_until(printed, timeout=60, message="the pod to print")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = _launcher(nats_url, bus_prefix, pg_dsn, s3_settings, cluster, log)
        try:
            ended = await finished(client, run.id, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 30)
        assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, (ended, log.read_text()[-3000:])
        followed = await client.follow(run.id)
        stdout = [t for _, s, t in followed.lines if s == "stdout"]
        assert stdout == [f"line {i}" for i in range(1, LINES + 1)], followed.lines
        assert [seq for seq, _, _ in followed.lines] == list(range(len(followed.lines)))
        assert kubelet.started == [pod]
    finally:
        if first.poll() is None:
            first.kill()
        await client.close()
