"""Pods outlive their launcher: a stopping launcher hands its runs to the others, which adopt the pods (fenced by
the leases) and carry the log on from where it stood, each line once; a lease whose pod is gone is reported lost."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ame.bus_messages import LaunchCommand
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, RunSpec, RunState
from ame_launcher.kubernetes import manifests
from ame_launcher.kubernetes.backend import KubernetesBackend
from ame_launcher.logsink import ChunkPublisher
from tests.integration.clients import Grpc
from tests.k8s_kubelet import ContainerLog
from tests.kubernetes.conftest import Cluster, kubernetes_settings
from tests.kubernetes.test_pods import finished
from tests.registry_rows import insert_queued_run
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

LINES = 40


@pytest.fixture
def launcher_overrides(cluster: Cluster) -> dict[str, object]:
    return {
        "backend": "kubernetes",
        "kubernetes": kubernetes_settings(cluster),
        "reconcile_interval": 0.3,
        "heartbeat_interval": 0.3,
        "lease_ttl": 3.0,
    }


async def test_a_stopping_launcher_hands_its_pod_to_another_which_finishes_the_run_and_its_log(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    command = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done"
    run = await client.submit(command)
    holder = await wait_until(
        lambda: next((launcher for launcher in stack.launchers if launcher.active_runs == 1), None),
        timeout=30,
        message="a launcher to hold the run",
    )
    other = next(launcher for launcher in stack.launchers if launcher is not holder)

    async def printing() -> bool:
        if (await client.get(run.id)).state != run_pb2.RUN_STATE_RUNNING:
            return False
        pod = cluster.kubelet.pods.get(f"ame-{run.id}-1") if cluster.kubelet is not None else None
        return pod is None or len(pod.logs.get("main", ContainerLog()).lines) >= 3

    await wait_until(printing, timeout=30, message="the run to print")
    await holder.drain()
    await wait_until(lambda: other.active_runs == 1, timeout=15, message="the other launcher to adopt the run")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    followed = await client.follow(run.id)
    stdout = [t for _, s, t in followed.lines if s == "stdout"]
    assert stdout == [f"line {i}" for i in range(1, LINES + 1)], followed.lines
    seqs = [seq for seq, _, _ in followed.lines]
    assert seqs == list(range(len(seqs)))
    assert any(t.startswith("ame: adopted pod") for _, s, t in followed.lines if s == "system")
    if cluster.kubelet is not None:
        assert cluster.kubelet.started == [f"ame-{run.id}-1"]


async def test_an_adopted_pod_without_its_secret_is_deleted_and_lost_so_the_run_is_tried_again(
    stack: Stack, cluster: Cluster
) -> None:
    # The launcher that made the pod stopped before making its Secret: the pod can never start (its plan is the
    # Secret's volume), so the adopter deletes it and reports the attempt lost, instead of following it for ever.
    cluster.steer()
    backend = stack.launchers[0]._backend
    assert isinstance(backend, KubernetesBackend)
    api = await backend.api()
    command = LaunchCommand(str(uuid.uuid4()), 1, "default", RunSpec(command="echo never"))
    names = manifests.names(command.run_id, command.attempt)
    await api.create_pod(manifests.pod_manifest(command, backend.kube, secret_keys=[], gpu_model=None, grace_seconds=0))
    output = ChunkPublisher(
        stack.runtime.js, stack.runtime.names.run_log(command.run_id), command.run_id, command.attempt
    )

    async def on_started(pid: int | None) -> None:
        raise AssertionError("the pod cannot have started")

    result = await asyncio.wait_for(backend.attach(command, output, asyncio.Event(), on_started, 0), timeout=30)
    await output.close(LogEnd(state=result.state, reason=result.reason, total_lines=0))
    assert result.state == RunState.LOST, result
    assert result.reason == "the run's pod never got its Secret (its launcher stopped before making it)"
    assert await api.read_pod(names.pod) is None


async def test_an_expired_lease_whose_pod_is_gone_is_reported_lost_saying_so(stack: Stack, client: Grpc) -> None:
    async with stack.runtime.pool.acquire() as conn:
        run_id = await insert_queued_run(conn, RunSpec(project="pods", task="gone", command="true"))
        await conn.execute(
            """INSERT INTO leases (run_id, attempt, launcher_id, backend, project, task, expires_at)
               VALUES ($1::uuid, 1, 'launcher-gone', 'kubernetes', 'pods', 'gone', now() - interval '1 minute')""",
            run_id,
        )
    ended = await finished(client, run_id)
    assert ended.state == run_pb2.RUN_STATE_LOST, ended
    assert ended.reason == (
        "launcher launcher-gone stopped renewing its lease; the kubernetes backend has no work of the attempt left "
        "to adopt"
    ), ended.reason
