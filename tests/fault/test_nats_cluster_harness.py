"""The loopback JetStream cluster the fault tests use: it forms, a replicated stream survives the loss of its
leader (a new one is elected and keeps every message), and the killed node rejoins on its old port."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from ame_platform.embedded import EmbeddedNats, NatsCluster
from tests.waiting import wait_until

pytestmark = [pytest.mark.fault]


def test_a_clustered_node_needs_a_name_and_both_cluster_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server_name"):
        EmbeddedNats(tmp_path, cluster_name="c", cluster_port=6222)
    with pytest.raises(ValueError, match="both"):
        EmbeddedNats(tmp_path, server_name="n1", cluster_name="c")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_replicated_stream_survives_its_leader_and_the_node_rejoins(fault_dir: Path) -> None:
    async with NatsCluster(fault_dir / "cluster", size=3) as cluster:
        assert len(cluster.url.split(",")) == 3
        client = await nats.connect(servers=cluster.url.split(","), reconnect_time_wait=0.1)
        try:
            js = client.jetstream()
            await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
            for i in range(10):
                await js.publish("r3.before", str(i).encode())
            victim = await cluster.stream_leader("R3")
            port = victim.port
            await victim.kill()
            assert victim.pid is None and victim not in cluster.running

            async def successor() -> EmbeddedNats | None:
                try:
                    leader = await cluster.stream_leader("R3")
                except Exception:  # the election is still on
                    return None
                return leader if leader is not victim else None

            await wait_until(successor, timeout=30, interval=0.1, message="a new leader for R3")
            await js.publish("r3.after", b"10", timeout=10)
            assert (await js.stream_info("R3")).state.messages == 11

            await victim.start()
            assert victim.port == port

            async def all_replicas_current() -> bool:
                info = await js.stream_info("R3")
                assert info.cluster is not None
                return len(info.cluster.replicas or []) == 2 and all(r.current for r in info.cluster.replicas or [])

            await wait_until(all_replicas_current, timeout=30, interval=0.2, message="the killed node to catch up")
        finally:
            await client.close()
