"""AME's services as separate processes, as deployed: migrate jobs first, then api, logs, scheduler and two
launcher replicas against one bus and one database. The stack never restarts a service: a process that exits
stays exited, which is what the fault tests look for."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
from nats.errors import Error as NatsError

from ame.sdk.credentials import bearer, discover_token
from ame_platform.bus.subjects import API_REGISTRY, API_TRIGGERS, LAUNCHER_LAUNCH, LOGS_ARCHIVE, BusNames
from ame_platform.embedded._process import free_tcp_port
from tests.waiting import wait_until

# One entry per process; the launcher twice, as two replicas sharing one durable consumer.
SERVICES = ("api", "logs", "scheduler", "launcher", "launcher")
_MIGRATING = ("api", "logs", "scheduler", "launcher")
_STOP_TIMEOUT = 30.0


class ServiceExitedError(Exception):
    """A service process ended while the stack was starting (not an AssertionError: wait_until must not retry)."""


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        """The last error lines (why it stopped) and the last `lines` lines of the service's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<{self.log_path} unreadable: {exc}>"
        all_lines = text.splitlines()
        errors = [line for line in all_lines[:-lines] if " ERROR " in line or " CRITICAL " in line][-3:]
        return "\n".join([*errors, *(["..."] if errors else []), *all_lines[-lines:]])


@dataclass(frozen=True)
class ExitedService:
    name: str
    pid: int
    returncode: int
    log_tail: str

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}) exited with {self.returncode}:\n{self.log_tail}"


def service_env(
    *, nats_url: str, prefix: str, dsn: str, work_dir: Path, replicas: int = 1, **extra: str
) -> dict[str, str]:
    """The environment every service process gets: nothing AME_ from ours leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_NATS_URL=nats_url,
        AME_NATS_PREFIX=prefix,
        AME_NATS_REPLICAS=str(replicas),
        AME_POSTGRES_DSN=dsn,
        AME_API_GRPC_PORT=str(free_tcp_port()),
        AME_API_REST_PORT=str(free_tcp_port()),
        AME_LAUNCHER_WORK_DIR=str(work_dir / "launcher"),
        AME_LIFECYCLE_GRACEFUL_TIMEOUT="10s",
        # The token the fault tests' clients send (the session's), accepted as the bootstrap server-admin token.
        AME_API_BOOTSTRAP_TOKEN=discover_token() or "",
        **extra,
    )
    return env


class ServiceStack:
    """Start with `await stack.start()`; `exited()` says which processes have ended; `stop()` ends the rest."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.services: list[ServiceProcess] = []

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.env['AME_API_REST_PORT']}"

    async def start(self, ready_timeout: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The migrate jobs serialise on an advisory lock, so starting them together is safe (and quicker).
        results = await asyncio.gather(*(asyncio.to_thread(self._migrate, name) for name in _MIGRATING))
        outcomes = zip(_MIGRATING, results, strict=True)
        failed = [f"{name}: {result.stderr[-2000:]}" for name, result in outcomes if result.returncode]
        assert not failed, f"migrate jobs failed: {failed}"
        for index, name in enumerate(SERVICES):
            log_path = self.log_dir / f"{name}-{index}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"ame_{name}"],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.services.append(ServiceProcess(name, process, log_path))

        await self._wait_ready(ready_timeout)

    async def _wait_ready(self, timeout: float) -> None:
        """Ready once the api answers /healthz and every consumer is bound: the durable consumers exist and both
        launcher replicas have a pull request waiting. A service that exits meanwhile fails the start."""
        names = BusNames(self.env["AME_NATS_PREFIX"])
        durables = {
            names.events_stream: (API_REGISTRY, API_TRIGGERS),
            names.commands_stream: (LAUNCHER_LAUNCH,),
            names.logs_stream: (LOGS_ARCHIVE,),
        }
        launchers = SERVICES.count("launcher")
        nc = await nats.connect(servers=self.env["AME_NATS_URL"].split(","))
        js = nc.jetstream()
        try:
            async with httpx.AsyncClient(
                base_url=self.rest_url, timeout=2.0, headers=bearer(discover_token())
            ) as client:

                async def ready() -> bool:
                    exited = self.exited()
                    if exited:
                        raise ServiceExitedError("a service exited during start:\n" + "\n".join(map(str, exited)))
                    try:
                        if (await client.get("/healthz")).status_code != 200:
                            return False
                        for stream, consumers in durables.items():
                            for durable in consumers:
                                info = await js.consumer_info(stream, durable, timeout=2.0)
                                if durable == LAUNCHER_LAUNCH and (info.num_waiting or 0) < launchers:
                                    return False
                    except (httpx.TransportError, NatsError):
                        return False
                    return True

                await wait_until(ready, timeout=timeout, interval=0.1, message="every service to be ready")
        finally:
            await nc.close()

    def _migrate(self, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"ame_{name}", "migrate"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def exited(self) -> list[ExitedService]:
        return [
            ExitedService(s.name, s.process.pid, s.process.returncode, s.log_tail())
            for s in self.services
            if s.process.poll() is not None
        ]

    async def stop(self) -> None:
        for service in self.services:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.services:
            try:
                await asyncio.to_thread(service.process.wait, _STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                service.process.kill()
                await asyncio.to_thread(service.process.wait)


# The fixture's signature: start(nats_url=..., dsn=..., replicas=1) -> a started stack.
StackFactory = Callable[..., Awaitable[ServiceStack]]
