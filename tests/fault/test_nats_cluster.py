"""A three-node JetStream cluster, AME's streams with three replicas: the node that leads the streams is killed
(SIGKILL) while 500 runs are submitted, and later comes back. No service exits, and every run is accepted,
executed once and succeeds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ame_platform.bus.subjects import BusNames
from ame_platform.embedded import EmbeddedNats, NatsCluster
from tests.fault.load import reach, run_under_faults
from tests.fault.services import StackFactory
from tests.fault.submitter import Submitter
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.postgres,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(360),
]

KILL_AT = 150  # accepted submissions (of 500) when the leader is killed
REJOIN_AT = 350  # ... and when it is started again
ELECTION_TIMEOUT = 30.0


async def _leader_or_none(cluster: NatsCluster, stream: str) -> EmbeddedNats | None:
    try:
        return await cluster.stream_leader(stream)
    except Exception:  # no leader yet, or the request met the election; ask again
        return None


async def test_services_ride_out_losing_the_stream_leader(
    nats_cluster: NatsCluster, pg_dsn: str, service_stack: StackFactory, fault_dir: Path
) -> None:
    stack = await service_stack(nats_url=nats_cluster.url, dsn=pg_dsn, replicas=3)
    names = BusNames(stack.env["AME_NATS_PREFIX"])
    streams = (names.commands_stream, names.events_stream, names.logs_stream)

    async def lose_the_leader(submitter: Submitter) -> list[str]:
        faults: list[str] = []
        if not await reach(submitter, KILL_AT):
            return faults
        leaders = {stream: (await nats_cluster.stream_leader(stream)).server_name for stream in streams}
        victim = nats_cluster.node(leaders[names.commands_stream] or "")
        started = time.monotonic()
        await victim.kill()

        async def new_leader() -> EmbeddedNats | None:
            leader = await _leader_or_none(nats_cluster, names.commands_stream)
            return leader if leader is not None and leader is not victim else None

        successor = await wait_until(new_leader, timeout=ELECTION_TIMEOUT, interval=0.1, message="a new leader")
        faults.append(
            f"killed {victim.server_name} at {KILL_AT} accepted (stream leaders {leaders}); "
            f"{successor.server_name} leads {names.commands_stream} after {time.monotonic() - started:.1f}s"
        )
        if not await reach(submitter, REJOIN_AT):
            return faults
        await victim.start()
        faults.append(f"{victim.server_name} started again at {REJOIN_AT} accepted")
        return faults

    outcome = await run_under_faults(
        stack=stack,
        dsn=pg_dsn,
        effects=fault_dir / "executions.txt",
        script=lose_the_leader,
        title="3-node NATS cluster loses the stream leader under load",
        planned_faults=2,
    )
    assert not outcome.failures, outcome.report("3-node NATS cluster loses the stream leader under load")
