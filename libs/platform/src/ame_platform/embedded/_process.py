"""Child-process plumbing shared by the embedded servers.

The servers are started with `subprocess.Popen` and polled from the event loop rather than with
`asyncio.create_subprocess_exec`: a Popen handle is not bound to the loop that created it, so a server
started in one loop (a session fixture) can be stopped from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL = 0.02


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start or stop; the message carries its log tail."""


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port on `host`.

    The port is only free at the time of the call; callers that cannot let the server pick its own
    port must be ready for a lost race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(death_signal: signal.Signals, parent_pid: int) -> Callable[[], None] | None:
    """Build a preexec_fn that asks the kernel to signal the child when its parent dies.

    The process-group kill in `stop_process` covers orderly shutdowns; this covers a SIGKILLed parent,
    which runs no cleanup at all. Popen runs preexec_fn after switching user, which matters because a
    credential change clears the death signal.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: the child between fork and exec should run as little Python as possible.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), int(death_signal))

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_file: IO[bytes],
    death_signal: signal.Signals,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session with stdout/stderr appended to `log_file`."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        # A new session makes the child a group leader, so stop_process can signal it together with any
        # helpers left in its group, and a Ctrl-C in our terminal does not hit it before we stop it in order.
        start_new_session=True,
        preexec_fn=_die_with_parent(death_signal, os.getpid()),
        user=user,
        group=group,
        extra_groups=[] if user is not None else None,
    )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """True while any process remains in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` seconds for `process` to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_INTERVAL)
    return True


async def stop_process(process: subprocess.Popen[bytes], *, graceful_signal: signal.Signals, timeout: float) -> None:
    """Send `graceful_signal` to the process group, wait `timeout`, then SIGKILL what is left."""
    pgid = process.pid
    if process.poll() is None:
        _signal_group(pgid, graceful_signal)
        if not await wait_exit(process, timeout):
            _signal_group(pgid, signal.SIGKILL)
            await wait_exit(process, timeout)
    # Helpers of a killed leader can linger for a moment; do not leave them to the next start.
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110 - nothing to wait on but the kernel
        await asyncio.sleep(_POLL_INTERVAL)
    if group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)


def log_tail(path: Path, start_offset: int = 0, max_bytes: int = 4000) -> str:
    """The last `max_bytes` a server wrote to `path` since `start_offset`, for error messages."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(start_offset, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"


class EmbeddedProcess:
    """What every embedded server shares: its pid and port, its log file, stopping it, and `async with`.

    Subclasses implement `start` (spawn with `spawn`, keep the handle in `_process` and the log in
    `_log_handle`) and name their graceful stop signal.
    """

    label: ClassVar[str]
    log_name: ClassVar[str]
    graceful_signal: ClassVar[signal.Signals]

    def __init__(self, data_dir: Path, *, host: str, port: int | None, stop_timeout: float) -> None:
        self.data_dir = data_dir
        self.host = host
        self._port = port
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / self.log_name

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError(f"{self.label} has not been started yet; its port is not known")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """The graceful signal, then SIGKILL if the server does not exit in time; closes the log."""
        process, self._process = self._process, None
        if process is not None:
            await stop_process(process, graceful_signal=self.graceful_signal, timeout=self._stop_timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
