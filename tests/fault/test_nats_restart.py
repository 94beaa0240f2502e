"""nats-server stopped (SIGTERM) and started again on the same port and store, several times, while 500 runs are
submitted: no service exits, and every run is accepted, executed once and succeeds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ame_platform.embedded import EmbeddedNats
from tests.fault.load import CONCURRENCY, hold_outage, reach, run_under_faults
from tests.fault.services import StackFactory
from tests.fault.submitter import Submitter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.postgres,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(360),
]

# Accepted submissions (of 500) at which the server is restarted.
RESTART_AT = (80, 180, 280, 380)


async def test_services_ride_out_nats_restarts_under_load(
    restartable_nats: EmbeddedNats, pg_dsn: str, service_stack: StackFactory, fault_dir: Path
) -> None:
    stack = await service_stack(nats_url=restartable_nats.url, dsn=pg_dsn)

    async def restart_nats(submitter: Submitter) -> list[str]:
        faults = []
        for number, at in enumerate(RESTART_AT, start=1):
            if not await reach(submitter, at):
                break
            started = time.monotonic()
            await restartable_nats.stop()
            # Down for 2 s, and until every client worker has gone on submitting through the outage (the api
            # takes runs into its outbox meanwhile), but no longer than the 3 s the field report saw.
            held = await hold_outage(submitter, at_least=2.0, attempts=CONCURRENCY, cap=3.0)
            await restartable_nats.start()
            faults.append(
                f"nats-server restart {number} at {at} accepted: {held}; "
                f"serving again after {time.monotonic() - started:.1f}s"
            )
        return faults

    outcome = await run_under_faults(
        stack=stack,
        dsn=pg_dsn,
        effects=fault_dir / "executions.txt",
        script=restart_nats,
        title="nats-server restarted under load",
        planned_faults=len(RESTART_AT),
    )
    assert not outcome.failures, outcome.report("nats-server restarted under load")
