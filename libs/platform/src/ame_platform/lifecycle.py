"""One lifecycle for every AME process: signals -> stop flag -> two-phase drain -> resources closed.

A process is a set of components started under one `Supervisor`. Signals are handled here and only here:
SIGTERM or SIGINT sets the stop flag. Then every component stops taking new work and gets the graceful budget
to finish what it holds; whatever is still running after that is cancelled. If any supervised task dies with
an error, the process stops too and exits non-zero instead of limping on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Supervisor:
    """Owns a process's background tasks; the first task that fails stops the whole process."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop or asyncio.Event()
        self.failure: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed; stopping", task.get_name(), exc_info=exc)
            if self.failure is None:
                self.failure = exc
            self.stop.set()

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Component(Protocol):
    """A unit of a service: it starts its loops under the supervisor and drains on stop."""

    name: str

    async def start(self, supervisor: Supervisor) -> None:
        """Start background work; return once the component is ready to take work."""

    async def drain(self) -> None:
        """Stop taking new work and return when the work in hand is done (the caller bounds the wait)."""


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


async def run_components(
    components: Sequence[Component],
    *,
    graceful_timeout: float,
    supervisor: Supervisor | None = None,
    on_ready: Coroutine[Any, Any, None] | None = None,
) -> int:
    """Run components until the stop flag is set, then drain them; returns the process exit code."""
    supervisor = supervisor or Supervisor()
    started: list[Component] = []
    try:
        for component in components:
            await component.start(supervisor)
            started.append(component)
            log.debug("started %s", component.name)
        if on_ready is not None:
            await on_ready
        await supervisor.stop.wait()
    finally:
        if on_ready is not None:
            # Not awaited when a start failed (closing a finished coroutine is a no-op): avoids "never awaited".
            on_ready.close()
        await _drain(started, graceful_timeout)
        await supervisor.cancel_all()
    return 1 if supervisor.failure is not None else 0


async def _drain(components: Sequence[Component], graceful_timeout: float) -> None:
    # Front doors first (they are started last), so no new work arrives while the rest finish.
    drains = [asyncio.create_task(c.drain(), name=f"drain:{c.name}") for c in reversed(components)]
    if not drains:
        return
    done, pending = await asyncio.wait(drains, timeout=graceful_timeout)
    for task in pending:
        log.warning("%s did not drain within %.1fs; cancelling", task.get_name(), graceful_timeout)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            log.error("%s failed while draining", task.get_name(), exc_info=task.exception())


class Periodic:
    """A component that runs `action` every `interval` seconds until drained.

    A failing pass is logged and the next one runs on schedule: periodic work (relays, tickers, heartbeats,
    reconcilers) must survive a database or bus blip instead of taking the process down.
    """

    def __init__(self, name: str, interval: float, action: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval = interval
        self._action = action
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, supervisor: Supervisor) -> None:
        self._task = supervisor.spawn(self.name, self._loop())

    async def drain(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self._action()
            except Exception:
                log.warning("%s failed; next pass in %.1fs", self.name, self._interval, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
