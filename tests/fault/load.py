"""Driving a fault test: the submission stream runs while a fault script acts at chosen points of it (counts of
accepted submissions, not times), then the outcome is settled, counted and printed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.fault.outcome import Outcome, effect_command, settle_and_check
from tests.fault.services import ServiceStack
from tests.fault.submitter import Submitter
from tests.waiting import wait_until

SUBMISSIONS = 500
# Two cores in CI, shared by five services, the infrastructure and the runs themselves.
CONCURRENCY = 8
SUBMIT_DEADLINE = 100.0
SETTLE_TIMEOUT = 60.0
REQUEST_TIMEOUT = 15.0

FaultScript = Callable[[Submitter], Awaitable[list[str]]]


async def _within(predicate: Callable[[], bool], timeout: float) -> bool:
    """Wait for `predicate` up to `timeout`; False instead of an error when it does not come."""
    try:
        await wait_until(predicate, timeout=timeout, interval=0.01)
    except AssertionError:
        return False
    return True


async def reach(submitter: Submitter, accepted: int) -> bool:
    """Wait until `accepted` submissions were accepted; False if the stream ended (or stalled) first."""
    return (
        await _within(lambda: submitter.done or len(submitter.ledger.accepted) >= accepted, SUBMIT_DEADLINE)
        and len(submitter.ledger.accepted) >= accepted
    )


async def hold_outage(submitter: Submitter, *, at_least: float, cap: float, attempts: int = 0, refused: int = 0) -> str:
    """Keep a fault in place for `at_least` seconds (the outage's length is part of the fault) and until the
    client has sent `attempts` more requests and had `refused` more refused, so the outage is known to have met
    the load; never longer than `cap` seconds, nor once the submissions are over."""
    ledger = submitter.ledger
    start_attempts, start_refused, started = ledger.attempts, ledger.refused, time.monotonic()
    await _within(
        lambda: (
            submitter.done
            or (
                time.monotonic() - started >= at_least
                and ledger.attempts - start_attempts >= attempts
                and ledger.refused - start_refused >= refused
            )
        ),
        cap,
    )
    return (
        f"held {time.monotonic() - started:.1f}s, {ledger.attempts - start_attempts} attempts "
        f"({ledger.refused - start_refused} refused) meanwhile"
    )


async def run_under_faults(
    *, stack: ServiceStack, dsn: str, effects: Path, script: FaultScript, title: str, planned_faults: int
) -> Outcome:
    submitter = Submitter(
        stack.rest_url,
        effect_command(effects),
        count=SUBMISSIONS,
        concurrency=CONCURRENCY,
        deadline=SUBMIT_DEADLINE,
        request_timeout=REQUEST_TIMEOUT,
        give_up=lambda: bool(stack.exited()),
    )
    submitting = asyncio.create_task(submitter.run())
    try:
        faults = await script(submitter)
    finally:
        ledger = await submitting
    outcome = await settle_and_check(
        dsn=dsn, ledger=ledger, effects=effects, stack=stack, settle_timeout=SETTLE_TIMEOUT, faults=faults
    )
    if len(faults) < planned_faults:
        outcome.failures.insert(0, f"only {len(faults)} of {planned_faults} faults happened under load: {faults}")
    print(outcome.report(title))
    return outcome
