"""Each service run alone, as a Kubernetes Deployment runs it, answers its probes on AME_<SERVICE>_HEALTH_PORT."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ame_platform.embedded._process import free_tcp_port
from tests.fault.services import service_env
from tests.integration.migrating import migrate_services
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]

SERVICES = ("api", "scheduler", "launcher", "logs")


async def test_every_service_is_live_then_ready_then_stops_cleanly(
    nats_url: str, bus_prefix: str, pg_dsn: str, tmp_path: Path
) -> None:
    ports = {name: free_tcp_port() for name in SERVICES}
    env = service_env(
        nats_url=nats_url,
        prefix=bus_prefix,
        dsn=pg_dsn,
        work_dir=tmp_path,
        **{f"AME_{name.upper()}_HEALTH_PORT": str(port) for name, port in ports.items()},
    )
    await migrate_services(pg_dsn, SERVICES)  # the migrate Job
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in SERVICES}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"ame_{name}"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        for name, log in logs.items()
    }
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def all_ready() -> bool:
                for name, process in processes.items():
                    assert process.poll() is None, f"{name} exited: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
                    try:
                        response = await client.get(f"http://127.0.0.1:{ports[name]}/readyz")
                    except httpx.TransportError:
                        return False
                    if response.status_code != 200:
                        return False
                return True

            await wait_until(all_ready, timeout=180, interval=0.1, message="every service to be ready")
            for name in SERVICES:
                live = await client.get(f"http://127.0.0.1:{ports[name]}/livez")
                assert (live.status_code, live.json()) == (200, {"status": "alive"}), name
                ready = await client.get(f"http://127.0.0.1:{ports[name]}/readyz")
                assert (ready.status_code, ready.json()) == (200, {"status": "ready"}), name
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(p.wait, 30) for name, p in processes.items()}
        assert codes == dict.fromkeys(SERVICES, 0)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
