"""The process lifecycle: start in order, drain in reverse within a budget, fail fast when a task dies."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ame_platform.lifecycle import (
    RestartPolicy,
    Supervisor,
    install_signal_handlers,
    remove_signal_handlers,
    run_components,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="session")]


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []


class Part:
    """A component double: records its start and drain, optionally running a supervised loop."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        self.name = name
        self.recorder = recorder
        self.loop_cancelled = False
        self.loop: asyncio.Task[None] | None = None

    async def start(self, supervisor: Supervisor) -> None:
        self.recorder.events.append(f"start:{self.name}")
        self.loop = supervisor.spawn(f"loop:{self.name}", self._loop())

    async def _loop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.loop_cancelled = True
            raise

    async def drain(self) -> None:
        self.recorder.events.append(f"drain:{self.name}")


class Crashing(Part):
    """Its supervised task fails once `crash` is set."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        super().__init__(name, recorder)
        self.crash = asyncio.Event()

    async def start(self, supervisor: Supervisor) -> None:
        self.recorder.events.append(f"start:{self.name}")
        supervisor.spawn(f"loop:{self.name}", self._die())

    async def _die(self) -> None:
        await self.crash.wait()
        raise RuntimeError("the consumer loop died")


class CrashesOnce(Part):
    """Its supervised task fails the first `crashes` times it is started, then runs like a healthy one."""

    def __init__(self, name: str, recorder: Recorder, crashes: int) -> None:
        super().__init__(name, recorder)
        self.crashes = crashes
        self.starts = 0

    async def start(self, supervisor: Supervisor) -> None:
        self.starts += 1
        self.recorder.events.append(f"start:{self.name}")
        if self.starts <= self.crashes:
            supervisor.spawn(f"loop:{self.name}", self._die())
        else:
            self.loop = supervisor.spawn(f"loop:{self.name}", self._loop())

    async def _die(self) -> None:
        await asyncio.sleep(0)
        raise ConnectionResetError("the consumer loop died")


class Stuck(Part):
    """Its drain never finishes on its own."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        super().__init__(name, recorder)
        self.drain_cancelled = False

    async def drain(self) -> None:
        self.recorder.events.append(f"drain:{self.name}")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.drain_cancelled = True
            raise


class FailsToStart(Part):
    async def start(self, supervisor: Supervisor) -> None:
        raise OSError("port already in use")


async def test_drains_in_reverse_start_order_and_exits_zero() -> None:
    recorder = Recorder()
    parts = [Part(n, recorder) for n in ("consumer", "relay", "front-door")]
    supervisor = Supervisor()

    async def ready() -> None:
        recorder.events.append("ready")
        supervisor.stop.set()

    code = await asyncio.wait_for(
        run_components(parts, graceful_timeout=5, supervisor=supervisor, on_ready=ready()), timeout=10
    )
    assert code == 0
    assert recorder.events == [
        "start:consumer",
        "start:relay",
        "start:front-door",
        "ready",
        "drain:front-door",
        "drain:relay",
        "drain:consumer",
    ]
    # Whatever supervised work remained after the drain was cancelled, not left running.
    assert all(p.loop_cancelled for p in parts)
    assert supervisor.failure is None


async def test_a_dying_task_stops_the_process_with_exit_code_one() -> None:
    recorder = Recorder()
    healthy = Part("healthy", recorder)
    crashing = Crashing("crashing", recorder)
    supervisor = Supervisor()
    run = asyncio.create_task(run_components([healthy, crashing], graceful_timeout=5, supervisor=supervisor))
    await wait_until(lambda: "start:crashing" in recorder.events, message="both components to start")
    assert not run.done()
    crashing.crash.set()
    code = await asyncio.wait_for(run, timeout=10)
    assert code == 1
    assert isinstance(supervisor.failure, RuntimeError)
    assert "died" in str(supervisor.failure)
    assert recorder.events[-2:] == ["drain:crashing", "drain:healthy"]
    assert healthy.loop_cancelled


async def test_a_drain_over_budget_is_cancelled_and_run_components_still_returns() -> None:
    recorder = Recorder()
    stuck = Stuck("stuck", recorder)
    polite = Part("polite", recorder)
    supervisor = Supervisor()

    async def ready() -> None:
        supervisor.stop.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await asyncio.wait_for(
        run_components([polite, stuck], graceful_timeout=0.3, supervisor=supervisor, on_ready=ready()),
        timeout=10,
    )
    elapsed = loop.time() - started
    assert code == 0
    assert stuck.drain_cancelled
    assert "drain:polite" in recorder.events
    assert 0.3 <= elapsed < 5


async def test_a_component_failing_to_start_drains_those_already_started() -> None:
    recorder = Recorder()
    first = Part("first", recorder)
    broken = FailsToStart("broken", recorder)
    never = Part("never", recorder)
    supervisor = Supervisor()

    async def ready() -> None:
        recorder.events.append("ready")

    with pytest.raises(OSError, match="port already in use"):
        await run_components([first, broken, never], graceful_timeout=5, supervisor=supervisor, on_ready=ready())
    assert recorder.events == ["start:first", "drain:first"]
    assert first.loop_cancelled


async def test_sigterm_sets_the_stop_flag() -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)
    finally:
        remove_signal_handlers()
    assert stop.is_set()


_FAST = RestartPolicy(max_failures=3, window=60.0, initial_delay=0.01, max_delay=0.05, drain_timeout=1.0)


async def test_with_a_restart_policy_a_failed_component_is_restarted_and_the_rest_keep_running() -> None:
    recorder = Recorder()
    healthy = Part("healthy", recorder)
    flaky = CrashesOnce("flaky", recorder, crashes=2)
    supervisor = Supervisor()
    run = asyncio.create_task(
        run_components([healthy, flaky], graceful_timeout=5, supervisor=supervisor, restart=_FAST)
    )
    await wait_until(lambda: supervisor.restarts.get("flaky") == 2, message="two restarts of the flaky component")
    assert flaky.starts == 3 and flaky.loop is not None and not flaky.loop.done()
    assert not run.done() and not supervisor.stop.is_set()
    # The healthy component was neither drained nor restarted.
    assert recorder.events.count("start:healthy") == 1 and "drain:healthy" not in recorder.events
    assert recorder.events.count("drain:flaky") == 2
    supervisor.stop.set()
    assert await asyncio.wait_for(run, timeout=10) == 0
    assert supervisor.gave_up is None


async def test_a_crash_loop_stops_the_process_with_a_clear_message() -> None:
    recorder = Recorder()
    healthy = Part("healthy", recorder)
    looping = CrashesOnce("looping", recorder, crashes=1000)
    supervisor = Supervisor()
    code = await asyncio.wait_for(
        run_components([healthy, looping], graceful_timeout=5, supervisor=supervisor, restart=_FAST), timeout=10
    )
    assert code == 1
    assert looping.starts == _FAST.max_failures
    assert supervisor.gave_up is not None
    assert supervisor.gave_up.startswith("component looping failed 3 times within 60s; giving up")
    assert "ConnectionResetError: the consumer loop died" in supervisor.gave_up
    assert healthy.loop_cancelled


class RestartsIntoAnOutage(CrashesOnce):
    """Crashes once; its next starts fail while 'the database' is away, then it starts."""

    def __init__(self, name: str, recorder: Recorder, outage_starts: int) -> None:
        super().__init__(name, recorder, crashes=1)
        self.outage_starts = outage_starts
        self.failed_starts = 0

    async def start(self, supervisor: Supervisor) -> None:
        if self.starts >= 1 and self.failed_starts < self.outage_starts:
            self.failed_starts += 1
            raise ConnectionRefusedError("database unreachable")
        await super().start(supervisor)


async def test_a_restart_into_an_outage_keeps_trying_without_counting_towards_a_crash_loop() -> None:
    recorder = Recorder()
    part = RestartsIntoAnOutage("consumer", recorder, outage_starts=_FAST.max_failures * 2)
    supervisor = Supervisor()
    run = asyncio.create_task(run_components([part], graceful_timeout=5, supervisor=supervisor, restart=_FAST))
    await wait_until(lambda: supervisor.restarts.get("consumer") == 1, message="the restart after the outage")
    assert part.failed_starts == _FAST.max_failures * 2
    assert part.loop is not None and not part.loop.done() and supervisor.gave_up is None
    supervisor.stop.set()
    assert await asyncio.wait_for(run, timeout=10) == 0


class CannotStartAgain(CrashesOnce):
    """Crashes once; every later start fails with a socket error of its own (its port is gone)."""

    async def start(self, supervisor: Supervisor) -> None:
        if self.starts >= 1:
            self.starts += 1
            raise OSError(98, "address already in use")
        await super().start(supervisor)


async def test_a_component_that_cannot_start_again_for_its_own_reasons_is_a_crash_loop() -> None:
    recorder = Recorder()
    part = CannotStartAgain("rest", recorder, crashes=1)
    supervisor = Supervisor()
    code = await asyncio.wait_for(
        run_components([part], graceful_timeout=5, supervisor=supervisor, restart=_FAST), timeout=10
    )
    assert code == 1
    assert supervisor.gave_up is not None and "component rest failed 3 times" in supervisor.gave_up
    assert "address already in use" in supervisor.gave_up
