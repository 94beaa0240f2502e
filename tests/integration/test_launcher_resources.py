"""Resources on the launcher's local backend, through the whole stack: a pretend two-GPU host (both launcher
replicas share its GPU lock directory, as two launchers on one machine would), memory limits, images."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from pathlib import Path

import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from tests.integration.clients import Grpc, py
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def launcher_overrides(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, object]:
    """A pretend two-GPU host; a test may pick the memory enforcement by parametrizing this fixture."""
    enforcement = getattr(request, "param", "auto")
    return {"gpus": "0,1", "gpu_lock_dir": tmp_path / "gpu-locks", "memory_enforcement": enforcement}


class _Log:
    """A run's log lines as they arrive, gathered in the background."""

    def __init__(self, client: Grpc, run_id: str) -> None:
        self.texts: list[str] = []
        self.end: ame_service_pb2.FollowLogsResponse | None = None
        self.task = asyncio.create_task(self._follow(client, run_id))

    async def _follow(self, client: Grpc, run_id: str) -> None:
        request = ame_service_pb2.FollowLogsRequest(run_id=run_id, batched=True)
        async for event in client.stub.FollowLogs(request):
            kind = event.WhichOneof("event")
            if kind == "line":
                self.texts.append(event.line.text)
            elif kind == "chunk":
                self.texts.extend(line.text for line in event.chunk.lines)
            else:
                self.end = event

    def has(self, text: str) -> bool:
        return any(text in line for line in self.texts)

    async def ended(self) -> ame_service_pb2.FollowLogsResponse:
        await asyncio.wait_for(self.task, timeout=60)
        assert self.end is not None
        return self.end


def _holds_a_gpu(release: Path) -> str:
    return (
        'echo "gpu=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"; '
        f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done"
    )


@pytest.mark.slow
async def test_one_gpu_runs_get_disjoint_devices_and_a_third_waits_saying_why(client: Grpc, tmp_path: Path) -> None:
    release = tmp_path / "release"
    gpu = run_pb2.Resources(gpus=1)
    logs: list[_Log] = []
    try:
        for _ in range(2):
            run = await client.submit(_holds_a_gpu(release), resources=gpu)
            logs.append(_Log(client, run.id))
        await wait_until(lambda: all(log.has("gpu=") for log in logs), timeout=30, message="both runs to start")
        seen = [next(t for t in log.texts if t.startswith("gpu=")) for log in logs]
        assert sorted(seen) == ["gpu=0 nv=0", "gpu=1 nv=1"]

        third = await client.submit(_holds_a_gpu(release), resources=gpu)
        waiting = _Log(client, third.id)
        logs.append(waiting)
        await wait_until(
            lambda: waiting.has("ame: waiting for 1 GPU, 0 of 2 free"), timeout=30, message="the third run's reason"
        )
        assert not waiting.has("gpu=")
        assert (await client.get(third.id)).state in (run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_LAUNCHING)

        release.touch()
        for log in logs:
            end = await log.ended()
            assert end.end.state == run_pb2.RUN_STATE_SUCCEEDED
        assert waiting.has("gpu=0 nv=0") or waiting.has("gpu=1 nv=1")
    finally:
        release.touch()
        for log in logs:
            log.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await log.task


@pytest.mark.slow
async def test_a_run_waiting_for_gpus_can_be_cancelled(client: Grpc, tmp_path: Path) -> None:
    release = tmp_path / "release"
    holder = await client.submit(_holds_a_gpu(release), resources=run_pb2.Resources(gpus=2))
    holder_log = _Log(client, holder.id)
    waiter = await client.submit(_holds_a_gpu(release), resources=run_pb2.Resources(gpus=1))
    waiter_log = _Log(client, waiter.id)
    try:
        await wait_until(lambda: holder_log.has("gpu=0,1"), timeout=30, message="the holder to take both GPUs")
        await wait_until(
            lambda: waiter_log.has("ame: waiting for 1 GPU, 0 of 2 free"), timeout=30, message="the waiter's reason"
        )
        await client.stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=waiter.id, reason="no longer needed"))
        end = await waiter_log.ended()
        assert end.end.state == run_pb2.RUN_STATE_CANCELLED
        assert end.end.reason == "no longer needed"
        assert not waiter_log.has("gpu=")
        release.touch()
        assert (await holder_log.ended()).end.state == run_pb2.RUN_STATE_SUCCEEDED
    finally:
        release.touch()
        for log in (holder_log, waiter_log):
            log.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await log.task


async def test_a_run_without_gpus_sees_none_on_the_gpu_host(client: Grpc) -> None:
    run = await client.submit('echo "gpu=[$CUDA_VISIBLE_DEVICES]"')
    followed = await client.follow(run.id)
    assert followed.texts == ["gpu=[]"]


async def test_more_gpus_than_the_host_has_fails_with_the_reason(client: Grpc) -> None:
    run = await client.submit("echo should not run", task="big", resources=run_pb2.Resources(gpus=3))
    followed = await client.follow(run.id)
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_FAILED
    reason = "big: the task asks for 3 GPUs and this host has 2 GPUs"
    assert followed.end.end.reason == reason
    assert followed.texts == [f"ame: {reason}"]

    async def recorded() -> bool:
        run_now = await client.get(run.id)
        return run_now.state == run_pb2.RUN_STATE_FAILED and run_now.reason == reason

    await wait_until(recorded, message="the registry to record the reason")


async def test_an_image_is_refused_by_the_local_backend(client: Grpc) -> None:
    run = await client.submit("echo should not run", task="boxed", executor=run_pb2.Executor(image="python:3.12"))
    followed = await client.follow(run.id)
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_FAILED
    assert followed.end.end.reason.startswith("boxed: the task names the container image 'python:3.12'")
    assert "should not run" not in followed.texts


_ALLOCATE = "import time; held = b'x' * ({mib} << 20); time.sleep(1.5); print('allocated {mib}')"


# auto: a cgroup where this host allows one (it falls back to the watchdog elsewhere); watchdog: always.
@pytest.mark.parametrize("launcher_overrides", ["auto", "watchdog"], indirect=True)
async def test_memory_limit_ends_a_greedy_run_and_spares_a_modest_one(client: Grpc) -> None:
    limit = run_pb2.Resources(memory_bytes=100 << 20)
    greedy = await client.submit(py(_ALLOCATE.format(mib=400)), resources=limit)
    modest = await client.submit(py(_ALLOCATE.format(mib=20)), resources=limit)
    greedy_log, modest_log = await asyncio.gather(client.follow(greedy.id), client.follow(modest.id))
    assert greedy_log.end is not None
    assert greedy_log.end.end.state == run_pb2.RUN_STATE_FAILED
    assert greedy_log.end.end.exit_code == 137
    assert greedy_log.end.end.reason == "exceeded its memory limit of 100Mi"
    assert "allocated 400" not in greedy_log.texts
    assert modest_log.end is not None
    assert modest_log.end.end.state == run_pb2.RUN_STATE_SUCCEEDED
    assert modest_log.texts == ["allocated 20"]


async def test_cpu_beyond_the_host_is_a_share_with_a_note(client: Grpc) -> None:
    run = await client.submit("echo ran", task="wide", resources=run_pb2.Resources(cpu_millis=512_000))
    followed = await client.follow(run.id)
    assert followed.end is not None
    assert followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED
    assert followed.texts[-1] == "ran"
    assert any("wide: asks for 512 CPUs and this host has" in text for text in followed.texts)
