"""Liveness and readiness probes for a service process, on a small HTTP listener of their own.

`GET /livez` (and `/healthz`) answers 200 while the process's event loop runs: a kubelet restarts only a
process that is wedged, never one whose database is away (restarting would not bring it back).
`GET /readyz` answers 200 when the process should get work: every component started (consumers bound, servers
listening), NATS connected, PostgreSQL answering, no component being restarted and the process not draining;
otherwise 503 with the reasons, so a load balancer sends nothing to a replica that is starting or stopping.

The listener is plain asyncio (no web framework): it serves three paths to probes, opens before the service's
components start and closes after they have drained, so liveness answers throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

# A probe that takes longer than this is answered "not ready" rather than left hanging past the kubelet's timeout.
_CHECK_TIMEOUT = 2.0
_READ_TIMEOUT = 5.0
_MAX_REQUEST_LINE = 8192

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when fine, else the reason (short, and never a secret)."""


class Health:
    """What a process's probes read: its supervisor's state and checks of the connections it holds."""

    def __init__(self, supervisor: Supervisor, checks: dict[str, Check] | None = None) -> None:
        self._supervisor = supervisor
        self._checks = dict(checks or {})
        self._started = False

    @classmethod
    def for_runtime(cls, supervisor: Supervisor, runtime: Runtime) -> Health:
        async def nats() -> str | None:
            return None if runtime.nc.is_connected else "not connected"

        async def postgres() -> str | None:
            pool = runtime.pool
            if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
                # Every connection is in use, so the database answers: queueing for one would turn a busy
                # replica "not ready", and under load all of them at once.
                return None
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            return None

        return cls(supervisor, {"nats": nats, "postgres": postgres})

    def mark_started(self) -> None:
        """Every component has started: the process may be sent work."""
        self._started = True

    async def mark_started_when_ready(self) -> None:
        """The same, as the `on_ready` coroutine of `run_components`."""
        self.mark_started()

    async def readiness(self) -> dict[str, str]:
        """The reasons this process is not ready; empty when it is."""
        reasons: dict[str, str] = {}
        if self._supervisor.stop.is_set():
            reasons["process"] = "draining"
        elif not self._started:
            reasons["process"] = "starting"
        restarting = self._supervisor.restarting
        if restarting:
            reasons["components"] = "restarting: " + ", ".join(sorted(restarting))
        results = await asyncio.gather(*(self._run(check) for check in self._checks.values()))
        for name, problem in zip(self._checks, results, strict=True):
            if problem is not None:
                reasons[name] = problem
        return reasons

    @staticmethod
    async def _run(check: Check) -> str | None:
        try:
            return await asyncio.wait_for(check(), timeout=_CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer within {_CHECK_TIMEOUT:.0f}s"
        except Exception as exc:
            # The type only: an error's text may carry a host name or a connection string.
            return f"unavailable ({type(exc).__name__})"


class HealthServer:
    """Serves `/livez`, `/healthz` and `/readyz` on its own port (0 picks a free one) while entered.

    Not a lifecycle component: components drain all at once, and the probes must keep answering ("draining")
    until the last of them is done, so the listener wraps the whole `run_components` instead.
    """

    def __init__(self, health: Health, host: str, port: int) -> None:
        self._health = health
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._handle, self._host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health probes on %s (/livez, /readyz)", self.url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, object]]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout=_READ_TIMEOUT)
            # Headers are read and ignored: the probes take no input.
            while (await asyncio.wait_for(reader.readuntil(b"\n"), timeout=_READ_TIMEOUT)).strip():
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return "400 Bad Request", {"error": "malformed request"}
        parts = line.decode("latin-1").split()
        if len(line) > _MAX_REQUEST_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", {"error": "malformed request line"}
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/livez", "/healthz", "/readyz"):
            return "404 Not Found", {"error": f"no such endpoint {target[:100]!r}; try /livez or /readyz"}
        if method != "GET":
            return "405 Method Not Allowed", {"error": f"{method[:20]} not allowed; use GET"}
        if target != "/readyz":
            return "200 OK", {"status": "alive"}
        reasons = await self._health.readiness()
        if reasons:
            return "503 Service Unavailable", {"status": "not ready", "reasons": reasons}
        return "200 OK", {"status": "ready"}
