from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import nats
import pytest

from ame_platform.embedded import EmbeddedNats, EmbeddedServerError
from tests.processes import pid_alive
from tests.waiting import wait_until

_SERVE_FOREVER = """
import asyncio, sys
from pathlib import Path
from ame_platform.embedded import EmbeddedNats

async def main() -> None:
    server = EmbeddedNats(Path(sys.argv[1]))
    await server.start()
    print(server.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_serves_jetstream_and_stops(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path) as server:
        client = await nats.connect(server.url)
        jetstream = client.jetstream()
        await jetstream.add_stream(name="ORDERS", subjects=["orders.>"])
        ack = await jetstream.publish("orders.new", b"one")
        assert ack.seq == 1
        await client.close()
        pid, port = server.pid, server.port
    assert pid is not None
    assert server.pid is None
    assert not pid_alive(pid)
    assert not _port_open(port)


async def test_reused_data_dir_keeps_streams(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path) as server:
        client = await nats.connect(server.url)
        jetstream = client.jetstream()
        await jetstream.add_stream(name="KEEP", subjects=["keep.>"])
        await jetstream.publish("keep.it", b"payload")
        await client.close()

    async with EmbeddedNats(tmp_path) as server:
        client = await nats.connect(server.url)
        message = await client.jetstream().get_msg("KEEP", 1)
        await client.close()
    assert message.data == b"payload"


async def test_restart_keeps_the_picked_port(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, monitor_port=0)
    await server.start()
    url = server.url
    assert server.monitor_url is not None
    await server.stop()
    await server.start()
    try:
        assert server.url == url
    finally:
        await server.stop()


async def test_start_failure_reports_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNats(tmp_path, port=taken.getsockname()[1], start_timeout=5)
        with pytest.raises(EmbeddedServerError, match="address already in use"):
            await server.start()
    assert server.pid is None


async def test_sigkill_of_the_parent_takes_the_server_down(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE_FOREVER, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        server_pid = int(await asyncio.wait_for(parent.stdout.readline(), 30))
        assert pid_alive(server_pid)
    finally:
        # SIGKILL, as an OOM kill or `kill -9` would: the parent runs no cleanup at all.
        parent.send_signal(signal.SIGKILL)
        await parent.wait()

    await wait_until(lambda: not pid_alive(server_pid), timeout=10, message="nats-server to exit")


@pytest.mark.nats
async def test_session_server_fixture(nats_url: str, bus_prefix: str) -> None:
    client = await nats.connect(nats_url)
    subscription = await client.subscribe(f"{bus_prefix}.ping")
    await client.publish(f"{bus_prefix}.ping", b"hi")
    message = await subscription.next_msg(timeout=5)
    await client.close()
    assert message.data == b"hi"
