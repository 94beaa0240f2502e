"""The kubernetes backend under faults: watches that drop or expire, a create whose answer is lost, pods that are
OOM-killed, evicted, unschedulable or cancelled while pending."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame_launcher.app import leased_attempts
from ame_launcher.kubernetes.backend import KubernetesBackend
from tests.integration.clients import Grpc
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.test_pods import finished
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_PODS = kmock.resource("", "v1", "pods")
_SECRETS = kmock.resource("", "v1", "secrets")


@pytest.fixture
def scheduler_overrides() -> dict[str, object]:
    return {"retry_backoff": 0.2, "retry_poll_interval": 0.05}


def _backends(stack: Stack) -> list[KubernetesBackend]:
    backends = [launcher._backend for launcher in stack.launchers]
    assert all(isinstance(b, KubernetesBackend) for b in backends)
    return backends  # type: ignore[return-value]


def _live(cluster: Cluster, resource: Any) -> list[str]:
    assert cluster.km is not None
    return [
        name
        for (res, namespace, name), obj in cluster.km.objects.items()
        if res == resource and namespace == cluster.namespace and not obj.deleted
    ]


async def test_a_watch_that_expires_and_one_that_drops_lose_no_state_change(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    kubelet = cluster.steer()
    assert cluster.km is not None
    watches = 0

    def watch(request: kmock.Request) -> Any:
        nonlocal watches
        watches += 1
        if watches == 1:  # the resourceVersion is too old: 410 Gone, as an ERROR event
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (42)"}
            return ({"type": "ERROR", "object": gone},)
        if watches == 2:  # the connection drops: the stream ends with nothing
            return (b"",)
        return None  # then the emulator's own watch

    cluster.km[kmock.action.WATCH, _PODS] << watch
    run = await client.submit("echo one; echo two")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    assert watches >= 3
    # The first list, and the relist after the 410; the dropped stream resumes from the last resourceVersion.
    assert sum(b.watcher.relists for b in _backends(stack) if b._watcher is not None) >= 2
    followed = await client.follow(run.id)
    assert [t for _, s, t in followed.lines if s == "stdout"] == ["one", "two"]
    assert kubelet.started == [f"ame-{run.id}-1"]


async def test_a_create_whose_answer_is_lost_gives_one_pod(stack: Stack, client: Grpc, cluster: Cluster) -> None:
    kubelet = cluster.steer()
    assert cluster.km is not None
    # The emulator stores the pod and then answers 500, once: the write happened, the answer says it did not.
    cluster.km[kmock.action.CREATE, _PODS][:1] << 500
    run = await client.submit("echo made once")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    creates = [r for r in cluster.km[kmock.action.CREATE, _PODS]]
    assert len(creates) == 1, "the backend looked before creating again"
    assert kubelet.started == [f"ame-{run.id}-1"]
    assert sum(b.created for b in _backends(stack)) == 0  # the only create answered 500


async def test_a_cancel_while_pending_deletes_the_pod_and_its_secret(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    kubelet = cluster.steer()
    kubelet.schedulable = False
    run = await client.submit("echo never")
    pod = f"ame-{run.id}-1"
    await wait_until(lambda: pod in _live(cluster, _PODS) and f"{pod}-run" in _live(cluster, _SECRETS), timeout=15)
    await wait_until(lambda: kubelet.pods.get(pod) is not None, timeout=15)

    async def said_unschedulable() -> bool:
        run_now = await client.get(run.id)
        return run_now.state == run_pb2.RUN_STATE_LAUNCHING

    await wait_until(said_unschedulable, timeout=15)
    await client.stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=run.id, reason="changed my mind"))
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_CANCELLED, ended
    assert pod not in _live(cluster, _PODS)
    assert f"{pod}-run" not in _live(cluster, _SECRETS)
    followed = await client.follow(run.id)
    assert any("Insufficient nvidia.com/gpu" in t for _, s, t in followed.lines if s == "system"), followed.lines
    assert kubelet.started == []


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("oom", "OOMKilled: the task used more than its memory limit of 64Mi"),
        ("evict", "Evicted: The node was low on resource: memory."),
    ],
)
async def test_oom_killed_and_evicted_pods_end_with_the_reason_and_capped_retries(
    stack: Stack, client: Grpc, cluster: Cluster, fault: str, reason: str
) -> None:
    kubelet = cluster.steer()
    run = await client.submit(
        "echo started; sleep 60",
        retries=1,
        resources=run_pb2.Resources(memory_bytes=64 * 1024 * 1024),
    )
    for attempt in (1, 2):
        pod = f"ame-{run.id}-{attempt}"

        async def running(pod: str = pod) -> bool:
            state = kubelet.pods.get(pod)
            return state is not None and "main" in state.logs and bool(state.logs["main"].lines)

        await wait_until(running, timeout=30, message=f"{pod} to print")
        await (kubelet.oom_kill(pod) if fault == "oom" else kubelet.evict(pod))
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED, ended
    assert ended.attempt == 2
    assert ended.reason == reason
    assert kubelet.started == [f"ame-{run.id}-1", f"ame-{run.id}-2"]


async def test_a_quota_refusal_waits_and_says_why(stack: Stack, client: Grpc, cluster: Cluster) -> None:
    cluster.steer()
    assert cluster.km is not None
    quota = (
        'pods "x" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
    refusal = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": quota}
    cluster.km[kmock.action.CREATE, _PODS][:2] << 403 << refusal
    run = await client.submit("echo admitted")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    followed = await client.follow(run.id)
    system = [t for _, s, t in followed.lines if s == "system"]
    assert system.count(f"ame: waiting for quota: {quota}") == 1, system
    assert [t for _, s, t in followed.lines if s == "stdout"] == ["admitted"]


@pytest.fixture
def kubernetes_overrides() -> dict[str, object]:
    return {"pending_timeout": 1.5, "image_pull_timeout": 1.5}


async def test_an_unschedulable_pod_fails_after_the_pending_timeout_with_the_schedulers_message(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    kubelet = cluster.steer()
    kubelet.schedulable = False
    run = await client.submit("echo never")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED
    assert ended.reason == f"the pod could not start: {kubelet.unschedulable_message}"
    assert f"ame-{run.id}-1" not in _live(cluster, _PODS)


async def test_an_image_that_cannot_be_pulled_fails_the_run_with_the_reason(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    kubelet = cluster.steer()
    kubelet.unpullable.add("registry.example/no-such-image:1")
    run = await client.submit(
        "echo never", executor=run_pb2.Executor(kind="custom", image="registry.example/no-such-image:1")
    )
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED
    assert ended.reason.startswith("the pod could not start: ImagePullBackOff"), ended.reason
    assert "no-such-image" in ended.reason


async def test_lines_the_kubelet_no_longer_holds_are_reported_as_a_gap(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    kubelet = cluster.steer()
    kubelet.logs_flowing.clear()
    run = await client.submit("for i in $(seq 1 20); do echo line $i; done")
    pod = f"ame-{run.id}-1"

    def printed() -> bool:
        state = kubelet.pods.get(pod)
        return state is not None and "main" in state.logs and state.logs["main"].done

    await wait_until(printed, timeout=30)
    kubelet.forget_log(pod, keep_last=5)
    kubelet.logs_flowing.set()
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    followed = await client.follow(run.id)
    assert [t for _, s, t in followed.lines if s == "stdout"] == [f"line {i}" for i in range(16, 21)]
    assert "ame: 15 line(s) of output are missing: the kubelet no longer holds them" in [
        t for _, s, t in followed.lines if s == "system"
    ]


async def test_a_pod_whose_node_went_away_is_lost_and_retried(stack: Stack, client: Grpc, cluster: Cluster) -> None:
    kubelet = cluster.steer()
    command = 'if [ "$AME_RUN_ATTEMPT" = 1 ]; then echo first; sleep 60; else echo second; fi'
    run = await client.submit(command, retries=1)
    pod = f"ame-{run.id}-1"

    def printed() -> bool:
        state = kubelet.pods.get(pod)
        return state is not None and "main" in state.logs and bool(state.logs["main"].lines)

    await wait_until(printed, timeout=30)
    await kubelet.lose_node(pod)
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    assert ended.attempt == 2
    assert kubelet.started == [pod, f"ame-{run.id}-2"]
    attempts = await client.stub.GetRun(ame_service_pb2.GetRunRequest(run_id=run.id))
    assert attempts.run.state == run_pb2.RUN_STATE_SUCCEEDED


async def test_finished_pods_are_collected_after_the_gc_delay(stack: Stack, client: Grpc, cluster: Cluster) -> None:
    cluster.steer()
    run = await client.submit("echo done")
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED
    pod = f"ame-{run.id}-1"
    assert pod in _live(cluster, _PODS)
    backend = _backends(stack)[0]
    backend.kube = backend.kube.model_copy(update={"gc_delay": 3600.0})
    assert await backend.collect_garbage() == 0  # ended too recently
    backend.kube = backend.kube.model_copy(update={"gc_delay": 0.0})
    still_leased = leased_attempts(stack.runtime)
    # A pod whose attempt's lease is active again (its launcher died, another will adopt it) is left alone,
    # however long ago it ended.
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            "UPDATE leases SET state = 'active', expires_at = now() + interval '1 hour' "
            "WHERE run_id = $1::uuid AND attempt = 1",
            run.id,
        )
    assert await backend.collect_garbage(still_leased) == 0
    assert pod in _live(cluster, _PODS)
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute("UPDATE leases SET state = 'finished' WHERE run_id = $1::uuid AND attempt = 1", run.id)
    assert await backend.collect_garbage(still_leased) == 1
    assert pod not in _live(cluster, _PODS)
    assert f"{pod}-run" not in _live(cluster, _SECRETS)
