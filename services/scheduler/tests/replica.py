"""One scheduler replica in the test's process, for tests that restart it (two of these in turn)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ame_platform.lifecycle import Supervisor, run_components
from ame_platform.runtime import Runtime
from ame_scheduler import app as scheduler_app
from ame_scheduler.settings import SchedulerSettings
from tests.waiting import wait_until


@asynccontextmanager
async def scheduler_replica(settings: SchedulerSettings, runtime: Runtime) -> AsyncIterator[None]:
    """One scheduler replica, started, and stopped (drained) on exit, which must be clean."""
    supervisor = Supervisor()
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    task = asyncio.create_task(
        run_components(
            scheduler_app.build_components(settings, runtime),
            graceful_timeout=10.0,
            supervisor=supervisor,
            on_ready=on_ready(),
        )
    )
    await wait_until(ready.is_set, message="the scheduler to start")
    try:
        yield
    finally:
        supervisor.stop.set()
        assert await task == 0
        assert supervisor.failure is None
