"""PostgreSQL stopped and started again on the same port and data dir, twice, while 500 runs are submitted:
no service exits, every submission is answered 2xx or 503 and accepted on retry, and every run is executed
once and succeeds (a database fault never decides a run's outcome)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ame_platform.embedded import EmbeddedPostgres
from tests.fault.load import hold_outage, reach, run_under_faults
from tests.fault.services import StackFactory
from tests.fault.submitter import Submitter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.nats,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(360),
]

# Accepted submissions (of 500) at which the database goes away.
OUTAGE_AT = (150, 350)


async def test_services_ride_out_postgres_restarts_under_load(
    restartable_postgres: EmbeddedPostgres, nats_url: str, service_stack: StackFactory, fault_dir: Path
) -> None:
    dsn = await restartable_postgres.create_database("ame")
    stack = await service_stack(nats_url=nats_url, dsn=dsn)

    async def restart_postgres(submitter: Submitter) -> list[str]:
        faults = []
        for number, at in enumerate(OUTAGE_AT, start=1):
            if not await reach(submitter, at):
                break
            started = time.monotonic()
            port = restartable_postgres.port
            await restartable_postgres.stop()
            # Down for the field report's 5 s, and until the client has been refused a fair number of times.
            held = await hold_outage(submitter, at_least=5.0, refused=20, cap=10.0)
            await restartable_postgres.start()
            assert restartable_postgres.port == port, "PostgreSQL came back on another port; the DSN is stale"
            faults.append(
                f"PostgreSQL restart {number} at {at} accepted: {held}; "
                f"serving again after {time.monotonic() - started:.1f}s"
            )
        return faults

    outcome = await run_under_faults(
        stack=stack,
        dsn=dsn,
        effects=fault_dir / "executions.txt",
        script=restart_postgres,
        title="PostgreSQL restarted under load",
        planned_faults=len(OUTAGE_AT),
    )
    assert not outcome.failures, outcome.report("PostgreSQL restarted under load")
