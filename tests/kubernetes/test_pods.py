"""Runs as pods: a run's whole life on the kubernetes backend, against the emulator and the test kubelet."""

from __future__ import annotations

import pytest

from ame.contracts.run.v1 import run_pb2
from tests.integration.clients import Grpc
from tests.kubernetes.conftest import Cluster
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_TERMINAL = {
    run_pb2.RUN_STATE_SUCCEEDED,
    run_pb2.RUN_STATE_FAILED,
    run_pb2.RUN_STATE_CANCELLED,
    run_pb2.RUN_STATE_TIMED_OUT,
    run_pb2.RUN_STATE_LOST,
}


async def finished(client: Grpc, run_id: str, timeout: float = 30.0) -> run_pb2.Run:
    async def ended() -> run_pb2.Run | None:
        run = await client.get(run_id)
        return run if run.state in _TERMINAL else None

    result = await wait_until(ended, timeout=timeout, interval=0.1, message=f"run {run_id} to end")
    assert isinstance(result, run_pb2.Run)
    return result


async def test_a_run_is_one_pod_with_its_output_streams_and_exit_code(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    run = await client.submit("echo hello; echo oops >&2; exit 3")
    ended = await finished(client, run.id)
    followed = await client.follow(run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED, ended
    assert [(s, t) for _, s, t in followed.lines if s != "system"] == [("stdout", "hello"), ("stderr", "oops")]
    assert followed.end is not None
    assert followed.end.end.exit_code == 3
    if cluster.kubelet is not None:
        assert cluster.kubelet.started == [f"ame-{run.id}-1"]
