"""Run one child process in its own process group, stream its output, and never leave anything behind.

This is the single spawn point for task commands, shared by `ame task run -l` and the launcher's
local backend. Every way out of `run_process` (normal exit, timeout, cancel event, the awaiting
task being cancelled) ends with the whole process group killed, because a task's command is
usually a shell or a tool (poetry, mlflow) that forks children we never see.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ame.runner.memory_limits import MemoryEnforcement, MemoryGuard, open_memory_guard, over_limit_reason

__all__ = [
    "MAX_LINE_BYTES",
    "CapturedOutput",
    "OutputSink",
    "ProcessOutcome",
    "ProcessSpec",
    "ProcessState",
    "StreamName",
    "capture_process",
    "mask_secrets",
    "run_process",
]

StreamName = Literal["stdout", "stderr"]
ProcessState = Literal["succeeded", "failed", "cancelled", "timed_out"]

# Longer lines are delivered in pieces so one runaway line (a progress bar without newlines, a
# base64 blob) cannot grow a buffer without bound.
MAX_LINE_BYTES = 64 * 1024

_READ_CHUNK = 64 * 1024
# After the group is killed, a process that escaped it (setsid, double fork) may still hold our
# pipes open; we stop waiting for EOF after this long instead of hanging forever.
# Only time spent waiting on an empty pipe counts: a reader that is slow because the sink holds it back (the bus
# is behind a chatty run) still has the pipe's last 64 KiB to hand on, and cutting it off would lose that output.
# A process that escaped the group and keeps writing is followed for at most _DRAIN_MAX_SECONDS.
_DRAIN_SECONDS = 2.0
_DRAIN_MAX_SECONDS = 120.0
_MASK = "***"


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and under which limits."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    timeout_seconds: float | None = None
    grace_seconds: float = 10.0
    secret_values: Sequence[str] = field(default=())
    # Enforced on the whole process group (see memory_limits); going over ends the run with exit code 137.
    memory_limit_bytes: int | None = None
    memory_enforcement: MemoryEnforcement = "auto"
    # Descriptors the child keeps open (GPU lock files: held until the last process of the run is gone).
    pass_fds: Sequence[int] = field(default=())


class OutputSink(Protocol):
    """Receives the child's pid and its output, one line at a time, per stream in order."""

    async def started(self, pid: int) -> None: ...

    async def line(self, stream: StreamName, text: str) -> None: ...


@dataclass(frozen=True)
class ProcessOutcome:
    """How the child ended. `exit_code` is 128+signum for a signal death, as shells report it."""

    state: ProcessState
    exit_code: int
    started_at: float
    finished_at: float
    reason: str | None = None


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """Replace every occurrence of each secret (and of each line of a multi-line secret) with ***."""
    return _apply_masks(text, _mask_patterns(secrets))


def _apply_masks(text: str, patterns: Sequence[str]) -> str:
    for pattern in patterns:
        if pattern in text:
            text = text.replace(pattern, _MASK)
    return text


def _mask_patterns(secrets: Sequence[str]) -> list[str]:
    patterns: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        patterns.add(secret)
        # Output is split into lines, so a multi-line secret (a PEM key) can only ever be seen
        # one line at a time.
        for part in secret.splitlines():
            if part.strip():
                patterns.add(part)
    # Longest first, so a secret that contains another is masked whole.
    return sorted(patterns, key=len, reverse=True)


async def run_process(spec: ProcessSpec, sink: OutputSink, *, cancel: asyncio.Event | None = None) -> ProcessOutcome:
    """Run `spec.argv` to completion, delivering output to `sink`.

    The cancel event and the timeout both end the child with SIGTERM to its process group,
    `grace_seconds` of patience, then SIGKILL. If the awaiting task itself is cancelled, the
    group is SIGKILLed at once (there is nobody left to wait for a grace period) and the
    CancelledError propagates.
    """
    started_at = time.time()
    guard: MemoryGuard | None = None
    argv = list(spec.argv)
    if spec.memory_limit_bytes is not None and argv:
        guard = await asyncio.to_thread(open_memory_guard, spec.memory_limit_bytes, spec.memory_enforcement)
        argv = guard.wrap(argv)
    try:
        return await _run_guarded(spec, argv, sink, cancel, guard, started_at)
    finally:
        if guard is not None:
            await guard.close()


async def _run_guarded(
    spec: ProcessSpec,
    argv: list[str],
    sink: OutputSink,
    cancel: asyncio.Event | None,
    guard: MemoryGuard | None,
    started_at: float,
) -> ProcessOutcome:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(spec.pass_fds),
        )
    except OSError as exc:
        return ProcessOutcome(
            state="failed",
            exit_code=_spawn_error_exit_code(exc),
            started_at=started_at,
            finished_at=time.time(),
            reason=f"could not start {spec.argv[0] if spec.argv else '<empty argv>'!r}: {exc}",
        )

    # With start_new_session the child is the leader of a new group whose id is its pid.
    pgid = proc.pid
    patterns = _mask_patterns(spec.secret_values)
    readers: list[asyncio.Task[None]] = []
    try:
        if guard is not None:
            guard.watch(pgid)
        await sink.started(proc.pid)
        # Both pipes were requested above; asyncio types them as optional.
        assert proc.stdout is not None
        assert proc.stderr is not None
        idle = _IdleReads()
        readers = [
            asyncio.create_task(_pump(proc.stdout, "stdout", sink, patterns, idle)),
            asyncio.create_task(_pump(proc.stderr, "stderr", sink, patterns, idle)),
        ]
        stop = await _wait_for_exit_or_stop(proc, spec.timeout_seconds, cancel)
        if stop is not None:
            await _terminate_group(proc, pgid, spec.grace_seconds)
        returncode = await proc.wait()
        # The leader is gone; whatever it left in its group goes too, so nothing outlives the run.
        _signal_group(pgid, signal.SIGKILL)
        await _drain(readers, idle)
    except BaseException:
        # Includes CancelledError: kill first, then let the caller see the exception.
        _signal_group(pgid, signal.SIGKILL)
        for reader in readers:
            reader.cancel()
        raise

    finished_at = time.time()
    exit_code = 128 - returncode if returncode < 0 else returncode
    if stop == "cancelled":
        return ProcessOutcome("cancelled", exit_code, started_at, finished_at, "cancelled")
    if stop == "timed_out":
        reason = f"timed out after {spec.timeout_seconds:g} s"
        return ProcessOutcome("timed_out", exit_code, started_at, finished_at, reason)
    if guard is not None and guard.exceeded():
        # A run that went over its limit failed, even if a shell around the killed process exited 0; reported
        # as the kernel's OOM killer would be: SIGKILL, 137.
        reason = over_limit_reason(guard.limit_bytes)
        return ProcessOutcome("failed", 128 + signal.SIGKILL, started_at, finished_at, reason)
    if returncode == 0:
        return ProcessOutcome("succeeded", 0, started_at, finished_at)
    reason = f"killed by signal {_signal_name(-returncode)}" if returncode < 0 else f"exited with code {returncode}"
    return ProcessOutcome("failed", exit_code, started_at, finished_at, reason)


@dataclass(frozen=True)
class CapturedOutput:
    """The outcome and the full output of a short helper command."""

    outcome: ProcessOutcome
    stdout: list[str]
    stderr: list[str]


class _CollectingSink:
    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        (self.stdout if stream == "stdout" else self.stderr).append(text)


async def capture_process(spec: ProcessSpec, *, cancel: asyncio.Event | None = None) -> CapturedOutput:
    """Run a short helper command (version probes, `uv python find`) and keep its output."""
    sink = _CollectingSink()
    outcome = await run_process(spec, sink, cancel=cancel)
    return CapturedOutput(outcome, sink.stdout, sink.stderr)


async def _wait_for_exit_or_stop(
    proc: asyncio.subprocess.Process, timeout: float | None, cancel: asyncio.Event | None
) -> Literal["cancelled", "timed_out"] | None:
    """Return None when the child exited on its own, else why we must stop it."""
    exited: asyncio.Task[int] = asyncio.ensure_future(proc.wait())
    stopped: asyncio.Task[bool] | None = None
    waiters: set[asyncio.Task[Any]] = {exited}
    if cancel is not None:
        stopped = asyncio.ensure_future(cancel.wait())
        waiters.add(stopped)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            return None
        return "cancelled" if stopped is not None and stopped.done() else "timed_out"
    finally:
        # A pending proc.wait() may be dropped safely: later calls share the same exit status.
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()


async def _terminate_group(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    _signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=max(grace, 0.0))
    except TimeoutError:
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _IdleReads:
    """When each pipe reader began waiting on its empty pipe (absent while it reads or hands lines on)."""

    def __init__(self) -> None:
        self.since: dict[StreamName, float] = {}


async def _drain(readers: list[asyncio.Task[None]], idle: _IdleReads) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + _DRAIN_MAX_SECONDS
    while True:
        done, pending = await asyncio.wait(readers, timeout=_DRAIN_SECONDS)
        if not pending:
            break
        now = loop.time()
        # Some reader still has output in hand: the pipe is not merely held open by an escaped process.
        busy = len(idle.since) < len(pending) or any(now - since < _DRAIN_SECONDS for since in idle.since.values())
        if not busy or now >= give_up:
            break
    for reader in pending:
        reader.cancel()
    for reader in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    for reader in done:
        reader.result()


async def _pump(
    stream: asyncio.StreamReader, name: StreamName, sink: OutputSink, patterns: list[str], idle: _IdleReads
) -> None:
    """Split a byte stream into lines of at most MAX_LINE_BYTES and hand them to the sink."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    encoded = [p.encode("utf-8") for p in patterns]

    async def emit(raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        await sink.line(name, _apply_masks(raw.decode("utf-8", errors="replace"), patterns))

    while True:
        idle.since[name] = loop.time()
        try:
            chunk = await stream.read(_READ_CHUNK)
        finally:
            # A reader that ended (EOF) or was cancelled waits on nothing.
            idle.since.pop(name, None)
        if not chunk:
            break
        buffer += chunk
        while True:
            newline = buffer.find(b"\n")
            if newline != -1 and newline <= MAX_LINE_BYTES:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                await emit(line)
            elif len(buffer) > MAX_LINE_BYTES or newline > MAX_LINE_BYTES:
                cut = _secret_safe_cut(buffer, _utf8_safe_cut(buffer, MAX_LINE_BYTES), encoded)
                piece = bytes(buffer[:cut])
                del buffer[:cut]
                await emit(piece)
            else:
                break
    if buffer:
        await emit(bytes(buffer))


def _secret_safe_cut(buffer: bytearray, cut: int, secrets: Sequence[bytes]) -> int:
    """Step back from `cut` so no secret straddles it: each piece is masked on its own, and a secret split
    across two pieces would otherwise be printed in two halves, unmasked."""
    back = 0
    for secret in secrets:
        for k in range(min(len(secret) - 1, cut), back, -1):
            if buffer[cut - k : cut] == secret[:k]:
                back = k
                break
    return cut - back if back < cut else cut


def _utf8_safe_cut(buffer: bytearray, limit: int) -> int:
    """Step back from `limit` so the cut does not land inside a multi-byte UTF-8 character."""
    cut = limit
    # Continuation bytes look like 0b10xxxxxx; a character is at most 4 bytes long.
    while cut > limit - 3 and cut < len(buffer) and (buffer[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def _spawn_error_exit_code(exc: OSError) -> int:
    # Same codes a shell uses, so callers can treat "could not start" like any other failure.
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return 127
    return 126


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
