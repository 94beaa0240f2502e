"""What a fault test asserts once the load is over, counted three ways: what the client was told (the ledger),
what the registry and the launchers' leases say (PostgreSQL), and what actually ran (one line per execution in a
side-effect file written by the run's own command)."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.fault.services import ServiceStack
from tests.fault.submitter import Ledger
from tests.waiting import wait_until

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
# A request the server took and then dropped without an answer (the connection closed or reset mid-exchange).
# Refused connections mean the api is not running (the exit check says so) and timeouts mean it is slow; both
# are reported and retried, not failed on here.
DROPPED = frozenset({"ReadError", "RemoteProtocolError", "WriteError"})
_SAMPLES = 5


def effect_command(effects: Path) -> str:
    """A cheap run that leaves one line per execution: its run id, appended (O_APPEND keeps lines whole)."""
    return f'echo "$AME_RUN_ID" >> {shlex.quote(str(effects))}'


@dataclass
class Outcome:
    counts: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def report(self, title: str) -> str:
        lines = [f"== fault test: {title} ==", json.dumps(self.counts, indent=2, sort_keys=True, default=str)]
        if self.failures:
            lines += ["-- failures --", *self.failures]
        return "\n".join(lines)


async def _fetch_runs(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch("SELECT id::text AS id, state, reason, idempotency_key FROM runs")
    finally:
        await conn.close()


async def _fetch_leases(dsn: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT run_id::text AS run_id, count(*) AS n FROM leases GROUP BY run_id")
    finally:
        await conn.close()
    return Counter({row["run_id"]: row["n"] for row in rows})


async def settle_and_check(
    *, dsn: str, ledger: Ledger, effects: Path, stack: ServiceStack, settle_timeout: float, faults: list[str]
) -> Outcome:
    """Wait (up to `settle_timeout`) for every accepted run to end, then count and judge everything.

    A service that has exited cuts the wait short: the test has failed, and nothing restarts it.
    """
    outcome = Outcome()
    accepted_ids = set(ledger.accepted.values())
    started = time.monotonic()

    async def all_terminal() -> bool:
        if stack.exited():
            return True
        rows = await _fetch_runs(dsn)
        return all(row["state"] in TERMINAL for row in rows if row["id"] in accepted_ids)

    # The stuck runs are counted and reported below, with everything else.
    with contextlib.suppress(AssertionError):
        await wait_until(all_terminal, timeout=settle_timeout, interval=0.25, message="every accepted run to end")
    settle_seconds = time.monotonic() - started

    exited = stack.exited()  # polled at the end, after the faults and the settling
    rows = await _fetch_runs(dsn)
    leases = await _fetch_leases(dsn)
    executions = Counter(line for line in _read_lines(effects) if line)

    runs_by_key: dict[str | None, list[asyncpg.Record]] = {}
    for row in rows:
        runs_by_key.setdefault(row["idempotency_key"], []).append(row)
    known_keys = set(ledger.keys)
    accepted_rows = [row for row in rows if row["id"] in accepted_ids]

    lost = [key for key, run_id in ledger.accepted.items() if run_id not in {r["id"] for r in runs_by_key.get(key, [])}]
    duplicated = [key for key in ledger.keys if len(runs_by_key.get(key, [])) > 1]
    strangers = [row["id"] for row in rows if row["idempotency_key"] not in known_keys]
    stuck = [row for row in accepted_rows if row["state"] not in TERMINAL]
    unsuccessful = [row for row in accepted_rows if row["state"] in TERMINAL and row["state"] != "succeeded"]
    never_executed = sorted(accepted_ids - set(executions))
    executed_twice = sorted(run_id for run_id, n in executions.items() if n > 1)
    executed_unknown = sorted(set(executions) - accepted_ids)
    lease_anomalies = sorted(run_id for run_id in accepted_ids if leases.get(run_id, 0) != 1)

    outcome.counts = {
        "faults": faults,
        "client": ledger.summary(),
        "services_exited": [f"{e.name} (pid {e.pid}) code {e.returncode}" for e in exited],
        "runs_in_registry": len(rows),
        "runs_by_state": dict(Counter(row["state"] for row in accepted_rows)),
        "runs_lost": len(lost),
        "keys_with_two_runs": len(duplicated),
        "runs_without_our_key": len(strangers),
        "runs_stuck": len(stuck),
        "runs_not_succeeded": len(unsuccessful),
        "executions": sum(executions.values()),
        "runs_never_executed": len(never_executed),
        "runs_executed_twice": len(executed_twice),
        "executions_of_unknown_runs": len(executed_unknown),
        "runs_without_exactly_one_lease": len(lease_anomalies),
        "settle_seconds": round(settle_seconds, 1),
        # With a service gone the wait is not taken, so the run counts are a snapshot, not a final tally.
        "settle_cut_short_by_exit": bool(exited),
    }

    failures = outcome.failures
    if not ledger.keys:
        failures.append("no submissions were made")
    for service in exited:
        failures.append(f"service exited: {service}")
    if ledger.bad_answers:
        statuses = Counter(status for _, status, _ in ledger.bad_answers)
        failures.append(
            f"{len(ledger.bad_answers)} answers neither 2xx nor 503 {dict(statuses)}; "
            f"e.g. {ledger.bad_answers[:_SAMPLES]}"
        )
    dropped = {name: n for name, n in ledger.transport_errors.items() if name in DROPPED}
    if dropped:
        failures.append(f"{sum(dropped.values())} requests dropped without an answer: {dropped}")
    if ledger.unaccepted:
        failures.append(f"{len(ledger.unaccepted)} submissions never accepted; e.g. {ledger.unaccepted[:_SAMPLES]}")
    if lost:
        failures.append(f"{len(lost)} accepted runs missing from the registry; e.g. keys {lost[:_SAMPLES]}")
    if duplicated:
        failures.append(f"{len(duplicated)} idempotency keys with more than one run; e.g. {duplicated[:_SAMPLES]}")
    if strangers:
        failures.append(f"{len(strangers)} runs no submission asked for; e.g. {strangers[:_SAMPLES]}")
    if stuck:
        failures.append(
            f"{len(stuck)} runs not ended {settle_timeout}s after the load: "
            f"{dict(Counter(r['state'] for r in stuck))}; e.g. {[r['id'] for r in stuck[:_SAMPLES]]}"
        )
    if unsuccessful:
        failures.append(
            f"{len(unsuccessful)} runs ended other than succeeded: {dict(Counter(r['state'] for r in unsuccessful))}; "
            f"e.g. {[(r['id'], r['state'], r['reason'][:200]) for r in unsuccessful[:_SAMPLES]]}"
        )
    if never_executed:
        failures.append(f"{len(never_executed)} accepted runs never executed; e.g. {never_executed[:_SAMPLES]}")
    if executed_twice:
        failures.append(f"{len(executed_twice)} runs executed more than once; e.g. {executed_twice[:_SAMPLES]}")
    if executed_unknown:
        failures.append(f"{len(executed_unknown)} executions of runs never accepted; e.g. {executed_unknown[:5]}")
    if lease_anomalies:
        failures.append(
            f"{len(lease_anomalies)} runs without exactly one lease; "
            f"e.g. {[(r, leases.get(r, 0)) for r in lease_anomalies[:_SAMPLES]]}"
        )
    return outcome


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
