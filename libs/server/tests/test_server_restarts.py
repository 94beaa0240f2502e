"""`ame server` restarts a failing component instead of dying, gives up on a crash loop with a clear message,
and serves the dead-letter admin commands of the `ame` CLI."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ame.cli.main import cli
from ame.sdk.credentials import bearer, discover_token
from ame_platform.bus.publisher import headers_for
from ame_platform.lifecycle import Component, Supervisor
from ame_platform.runtime import Runtime
from ame_server import server as server_module
from ame_server.server import Endpoints, serve
from ame_server.settings import ServerSettings
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


class Crashing:
    """A component whose supervised loop dies `crashes` times (once `armed`), then runs quietly."""

    def __init__(self, name: str, crashes: int, armed: bool = True) -> None:
        self.name = name
        self.crashes = crashes
        self.armed = asyncio.Event()
        if armed:
            self.armed.set()
        self.starts = 0

    async def start(self, supervisor: Supervisor) -> None:
        self.starts += 1
        supervisor.spawn(f"loop:{self.name}", self._loop(die=self.starts <= self.crashes))

    async def _loop(self, *, die: bool) -> None:
        await self.armed.wait()
        if die:
            raise ConnectionResetError(f"{self.name} lost its connection")
        await asyncio.Event().wait()

    async def drain(self) -> None:
        return None


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: PostgreSQL runs as an unprivileged user under root and must traverse the path.
    path = Path(tempfile.mkdtemp(prefix="ame-server-test-"))
    yield path / "server"
    shutil.rmtree(path, ignore_errors=True)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


async def test_the_server_restarts_a_failed_component_and_gives_up_on_a_crash_loop(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AME_LIFECYCLE_RESTART_MAX_FAILURES", "3")
    flaky = Crashing("flaky", crashes=2)
    looping = Crashing("looping", crashes=1000, armed=False)
    real_build = server_module.build_components
    runtimes: list[Runtime] = []

    def build_with_faults(*args: Any) -> tuple[list[Component], str, str]:
        components, rest_url, grpc_target = real_build(*args)
        runtimes.append(args[1])
        return [*components, flaky, looping], rest_url, grpc_target

    monkeypatch.setattr(server_module, "build_components", build_with_faults)
    settings = ServerSettings(data_dir=data_dir, rest_port=0, grpc_port=0, graceful_timeout=5.0)
    supervisor = Supervisor()
    ready: asyncio.Queue[Endpoints] = asyncio.Queue()
    serving = asyncio.create_task(serve(settings, supervisor=supervisor, on_ready=ready.put))
    try:
        waiting = asyncio.create_task(ready.get())
        await asyncio.wait([waiting, serving], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            waiting.cancel()
            serving.result()
            raise AssertionError("the server stopped during start")
        endpoints = waiting.result()
        # The flaky component failed twice and was restarted; the rest of the server never noticed.
        await wait_until(lambda: supervisor.restarts.get("flaky") == 2, timeout=30, message="two restarts of flaky")
        async with httpx.AsyncClient(base_url=endpoints.rest_url, headers=bearer(discover_token())) as rest:
            assert (await rest.get("/healthz")).status_code == 200
        assert not serving.done()

        # The admin CLI against the live server: a poison launch command shows up, and replays.
        assert (await asyncio.to_thread(_cli, "admin", "deadletters", "list", "--url", endpoints.rest_url)).output == (
            "no dead letters\n"
        )
        runtime = runtimes[0]
        await runtime.js.publish(runtime.names.run_launch, b"\xff\xff", headers=headers_for("poison-cli"))

        async def listed() -> str:
            result = await asyncio.to_thread(_cli, "admin", "deadletters", "list", "--url", endpoints.rest_url)
            return str(result.output) if "launcher-launch" in result.output else ""

        listing = await wait_until(listed, timeout=30, message="the dead letter in `ame admin deadletters list`")
        assert "poison: undecodable launch command" in listing
        replay = await asyncio.to_thread(_cli, "admin", "deadletters", "replay", "--all", "--url", endpoints.rest_url)
        assert replay.exit_code == 0 and f"to {runtime.names.run_launch}" in replay.output
        usage = await asyncio.to_thread(_cli, "admin", "deadletters", "replay", "--url", endpoints.rest_url)
        assert usage.exit_code == 2 and "give one dead letter ID or --all" in usage.output

        # A component that fails on every start is crash-looping: the server stops and says why.
        looping.armed.set()
        code = await asyncio.wait_for(serving, timeout=60)
    finally:
        if not serving.done():
            supervisor.stop.set()
            await asyncio.wait_for(serving, timeout=60)
    assert code == 1
    assert looping.starts == 3
    assert supervisor.gave_up is not None
    assert supervisor.gave_up.startswith("component looping failed 3 times within 300s; giving up")
    assert "ConnectionResetError: looping lost its connection" in supervisor.gave_up
