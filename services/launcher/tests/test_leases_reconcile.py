"""Leases against the real stack: abandoned runs are reported lost, and a launch command delivered twice runs once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from ame.codecs import parse_log_chunk
from ame.domain import RunSpec, RunState, TriggerKind, new_run_id
from ame_api import convert as api_convert
from ame_api.repositories import runs as runs_repo
from ame_platform.bus.publisher import headers_for
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _create_run(stack: Stack, task: str) -> str:
    run_id = new_run_id()
    async with stack.runtime.pool.acquire() as conn:
        await runs_repo.create_run(
            conn,
            run_id=run_id,
            organisation="default",
            spec=RunSpec(project="leases", task=task, command="true"),
            trigger=TriggerKind.API,
            parent_run_id="",
            idempotency_key=None,
        )
    return run_id


async def _insert_lease(stack: Stack, run_id: str, task: str, *, launcher_id: str, expires_in: timedelta) -> None:
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO leases (run_id, attempt, launcher_id, backend, project, task, expires_at)
               VALUES ($1::uuid, 1, $2, 'local', 'leases', $3, now() + $4)""",
            run_id,
            launcher_id,
            task,
            expires_in,
        )


async def _lease(stack: Stack, run_id: str) -> tuple[str, str | None]:
    async with stack.runtime.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, final_state FROM leases WHERE run_id = $1::uuid", run_id)
    assert row is not None
    return row["state"], row["final_state"]


async def _state(stack: Stack, run_id: str) -> RunState:
    async with stack.runtime.pool.acquire() as conn:
        return (await runs_repo.get_run(conn, run_id, organisation="default")).state


async def test_an_expired_lease_is_reported_lost_and_finished(stack: Stack) -> None:
    abandoned = await _create_run(stack, "abandoned")
    await _insert_lease(stack, abandoned, "abandoned", launcher_id="launcher-gone", expires_in=-timedelta(minutes=1))
    healthy = await _create_run(stack, "healthy")
    await _insert_lease(stack, healthy, "healthy", launcher_id="launcher-alive", expires_in=timedelta(hours=1))

    first, second = stack.launchers
    found = await asyncio.gather(first.reconcile(), second.reconcile())
    # SKIP LOCKED: one reconciler claims it (the launchers' own periodic pass may have been first).
    assert sum(found) <= 1

    async def lost_in_registry() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            run = await runs_repo.get_run(conn, abandoned, organisation="default")
        return run.state == RunState.LOST and "launcher-gone" in run.reason

    await wait_until(lost_in_registry, message="the registry to record the run as lost")
    assert await _lease(stack, abandoned) == ("finished", "lost")

    # Followers of the run are told it ended, too.
    last = await stack.runtime.js.get_last_msg(stack.runtime.names.logs_stream, stack.runtime.names.run_log(abandoned))
    assert last.data is not None
    chunk = parse_log_chunk(last.data)
    assert chunk.HasField("end") and chunk.end.reason.startswith("launcher launcher-gone")

    # A lease that is still being renewed is left alone.
    assert await first.reconcile() == 0
    assert await _lease(stack, healthy) == ("active", None)
    assert await _state(stack, healthy) == RunState.QUEUED


async def test_a_redelivered_launch_command_is_not_executed_twice(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    marker = tmp_path / "executions.txt"
    release = tmp_path / "release"
    code = (
        "import os, time\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "print('ran', flush=True)\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.01)\n"
    )
    run = await client.submit(py(code), project="leases", task="once")
    await wait_until(lambda: marker.exists() and marker.read_text() == "ran\n", message="the run to start")

    # The same command again, as JetStream redelivers it when an ack is lost (a fresh Nats-Msg-Id, so the
    # stream's duplicate window does not hide it): only the lease can stop a second execution.
    async with stack.runtime.pool.acquire() as conn:
        spec = (await runs_repo.get_run(conn, run.id, organisation="default")).spec
    payload = api_convert.launch_command(run.id, 1, "default", spec)
    names = stack.runtime.names
    ack = await stack.runtime.js.publish(names.run_launch, payload, headers=headers_for(f"redelivery:{run.id}"))
    assert not ack.duplicate

    async def command_consumed() -> bool:
        # Work-queue retention: the command leaves the stream once a launcher has acked it.
        return (await stack.runtime.js.stream_info(names.commands_stream)).state.messages == 0

    await wait_until(command_consumed, message="a launcher to take the repeated command")
    assert sum(launcher.active_runs for launcher in stack.launchers) == 1

    release.touch()
    followed = await client.follow(run.id)
    assert followed.texts == ["ran"]
    assert followed.end is not None
    await wait_until(lambda: _is(stack, run.id, RunState.SUCCEEDED), message="the run to succeed")
    await wait_until(
        lambda: all(launcher.active_runs == 0 for launcher in stack.launchers), message="launchers to go idle"
    )
    assert marker.read_text() == "ran\n"
    async with stack.runtime.pool.acquire() as conn:
        leases = await conn.fetch("SELECT attempt, state FROM leases WHERE run_id = $1::uuid", run.id)
    assert [tuple(r) for r in leases] == [(1, "finished")]


async def _is(stack: Stack, run_id: str, state: RunState) -> bool:
    return await _state(stack, run_id) == state
