"""One lifecycle for every AME process: signals -> stop flag -> two-phase drain -> resources closed.

A process is a set of components started under one `Supervisor`. Signals are handled here and only here:
SIGTERM or SIGINT sets the stop flag. Then every component stops taking new work and gets the graceful budget
to finish what it holds; whatever is still running after that is cancelled.

If a supervised task dies with an error, its component is drained and started again after a growing delay
(`RestartPolicy`); a component that keeps failing is crash-looping, and then the process stops and exits
non-zero with a message naming it, instead of limping on. A component that cannot start at all (a port in
use, an unmigrated schema, bad settings) stops the process at once: that is a fault no restart fixes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ame_platform.faults import is_transient

if TYPE_CHECKING:
    from ame_platform.settings import LifecycleSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervisor restarts a component whose task failed, and when it stops trying.

    A component that fails `max_failures` times within `window` seconds is crash-looping: restarting it
    again would only hide the fault, so the process stops with a message naming it and its last error.
    """

    max_failures: int = 5
    window: float = 300.0
    initial_delay: float = 1.0
    max_delay: float = 30.0
    drain_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: LifecycleSettings) -> RestartPolicy:
        return cls(
            max_failures=settings.restart_max_failures,
            window=settings.restart_window,
            max_delay=settings.restart_max_delay,
            drain_timeout=min(settings.graceful_timeout, 10.0),
        )


class Supervisor:
    """Owns a process's background tasks.

    Without a restart policy the first task that fails stops the whole process. With one (`run_components`
    sets it), a failed task's component is drained and started again after a growing delay, and only a
    crash loop stops the process; `gave_up` then says which component and why.
    """

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop or asyncio.Event()
        self.failure: BaseException | None = None
        self.gave_up: str | None = None
        self.restarts: dict[str, int] = {}
        self.policy: RestartPolicy | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._owners: dict[asyncio.Task[None], Component] = {}
        self._starting: Component | None = None
        self._failure_times: dict[str, collections.deque[float]] = {}
        self._restarting: set[str] = set()
        self._restart_tasks: set[asyncio.Task[None]] = set()

    @property
    def restarting(self) -> frozenset[str]:
        """The components being restarted after a failure, by name."""
        return frozenset(self._restarting)

    async def start_component(self, component: Component) -> None:
        """Start `component`; the tasks it spawns meanwhile are its own, so a failure restarts it."""
        self._starting = component
        try:
            await component.start(self)
        finally:
            self._starting = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        if self._starting is not None:
            self._owners[task] = self._starting
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        owner = self._owners.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self.policy is None or owner is None or self.stop.is_set():
            log.error("task %s failed; stopping", task.get_name(), exc_info=exc)
            self._fail(exc)
            return
        self._component_failed(owner, task.get_name(), exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stop.set()

    def _component_failed(self, component: Component, what: str, exc: BaseException) -> None:
        assert self.policy is not None
        if component.name in self._restarting:
            return  # another of its tasks failed first; the restart under way covers this one too
        now = time.monotonic()
        times = self._failure_times.setdefault(component.name, collections.deque())
        times.append(now)
        while times and now - times[0] > self.policy.window:
            times.popleft()
        if len(times) >= self.policy.max_failures:
            self.gave_up = (
                f"component {component.name} failed {len(times)} times within {self.policy.window:.0f}s; "
                f"giving up (last error in {what}: {type(exc).__name__}: {exc})"
            )
            log.error("%s", self.gave_up, exc_info=exc)
            self._fail(exc)
            return
        delay = min(self.policy.initial_delay * 2 ** (len(times) - 1), self.policy.max_delay)
        log.error("%s of %s failed; restarting %s in %.1fs", what, component.name, component.name, delay, exc_info=exc)
        self._restarting.add(component.name)
        task = asyncio.create_task(self._restart(component, delay), name=f"restart:{component.name}")
        self._restart_tasks.add(task)
        task.add_done_callback(self._restart_tasks.discard)

    async def _restart(self, component: Component, delay: float) -> None:
        assert self.policy is not None
        try:
            await asyncio.wait_for(component.drain(), timeout=self.policy.drain_timeout)
        except Exception as exc:
            log.warning("%s did not drain cleanly before its restart: %s", component.name, exc)
        await self._cancel([t for t, owner in self._owners.items() if owner is component])
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            if self.stop.is_set():
                self._restarting.discard(component.name)
                return
            try:
                await self.start_component(component)
            except Exception as exc:
                if _infrastructure_away(exc):
                    # NATS or PostgreSQL still away: not the component's fault, so it does not count towards
                    # a crash loop; keep trying at the longest delay until they are back.
                    log.warning("%s could not start again (%s: %s); retrying", component.name, type(exc).__name__, exc)
                    delay = self.policy.max_delay
                    continue
                self._restarting.discard(component.name)
                self._component_failed(component, "start", exc)
                return
            break
        self._restarting.discard(component.name)
        self.restarts[component.name] = self.restarts.get(component.name, 0) + 1
        log.warning("%s restarted", component.name)

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel_all(self) -> None:
        await self._cancel(list(self._restart_tasks))
        await self._cancel(list(self._tasks))


def _infrastructure_away(exc: BaseException) -> bool:
    # A socket error of the component's own (a port in use, a closed listening socket) is transient to the
    # fault classifier but no wait fixes it: only a lost connection to NATS or PostgreSQL is worth waiting out.
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return False
    return is_transient(exc)


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
    restart: RestartPolicy | None = None,
) -> int:
    """Run components until the stop flag is set, then drain them; returns the process exit code.

    With `restart`, a component whose task fails is restarted (see `RestartPolicy`) instead of stopping all.
    """
    supervisor = supervisor or Supervisor()
    if restart is not None:
        supervisor.policy = restart
    started: list[Component] = []
    try:
        for component in components:
            await supervisor.start_component(component)
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
        self._stop.clear()  # started again after a restart
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
