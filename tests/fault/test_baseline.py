"""The control for the fault tests: the same stack and the same 500 submissions with no fault at all. Every
count must come out clean here, so what a fault test reports is the fault's doing, not the harness's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.load import SUBMISSIONS, run_under_faults
from tests.fault.services import StackFactory
from tests.fault.submitter import Submitter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(300),
]


async def test_without_faults_every_count_is_clean(
    nats_url: str, pg_dsn: str, service_stack: StackFactory, fault_dir: Path
) -> None:
    stack = await service_stack(nats_url=nats_url, dsn=pg_dsn)

    async def no_faults(submitter: Submitter) -> list[str]:
        return []

    outcome = await run_under_faults(
        stack=stack,
        dsn=pg_dsn,
        effects=fault_dir / "executions.txt",
        script=no_faults,
        title="no fault (control)",
        planned_faults=0,
    )
    assert not outcome.failures, outcome.report("no fault (control)")
    assert outcome.counts["client"]["accepted"] == SUBMISSIONS  # type: ignore[index]
    assert outcome.counts["executions"] == SUBMISSIONS
    assert outcome.counts["runs_by_state"] == {"succeeded": SUBMISSIONS}
