"""Leases against the real stack: abandoned runs are reported lost, a launch command delivered twice runs once, and
a launcher whose lease was taken over reports nothing more of its run."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from ame import bus_messages, codecs
from ame.codecs import parse_log_chunk
from ame.contracts.run.v1 import run_pb2
from ame.domain import RunSpec, RunState
from ame_launcher.launches import Launcher
from ame_platform.bus.publisher import headers_for
from tests.integration.clients import Grpc, py
from tests.registry_rows import insert_queued_run
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _create_run(stack: Stack, task: str) -> str:
    async with stack.runtime.pool.acquire() as conn:
        return await insert_queued_run(conn, RunSpec(project="leases", task=task, command="true"))


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


async def _get(stack: Stack, run_id: str) -> run_pb2.Run:
    client = Grpc(stack.grpc_target)
    try:
        return await client.get(run_id)
    finally:
        await client.close()


async def _state(stack: Stack, run_id: str) -> RunState:
    return codecs.state_from_pb((await _get(stack, run_id)).state)


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
        run = await _get(stack, abandoned)
        return codecs.state_from_pb(run.state) == RunState.LOST and "launcher-gone" in run.reason

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
    spec = codecs.run_spec_from_pb((await client.get(run.id)).spec)
    payload = bus_messages.encode_launch(run.id, 1, "default", spec)
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


async def _blocked_run(stack: Stack, client: Grpc, tmp_path: Path, task: str) -> tuple[str, Path, Launcher]:
    """A run that prints a line and waits for its release file; and the launcher that holds it."""
    release = tmp_path / f"release-{task}"
    code = (
        f"import os, time\nprint('started', flush=True)\nwhile not os.path.exists({str(release)!r}): time.sleep(0.01)\n"
    )
    run = await client.submit(py(code), project="leases", task=task)
    await wait_until(lambda: _is(stack, run.id, RunState.RUNNING), message="the run to start")
    holder = next(launcher for launcher in stack.launchers if launcher.active_runs == 1)
    return run.id, release, holder


async def _take_over(stack: Stack, run_id: str) -> None:
    # What another launcher's reconciler does to the lease of one that stalled past its TTL (it adopts or reports).
    async with stack.runtime.pool.acquire() as conn:
        taken = await conn.execute(
            """UPDATE leases SET launcher_id = 'launcher-elsewhere', expires_at = now() + interval '1 hour'
               WHERE run_id = $1::uuid AND state = 'active'""",
            run_id,
        )
    assert taken == "UPDATE 1"


async def _reported_nothing(stack: Stack, run_id: str) -> None:
    names = stack.runtime.names
    for state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST):
        with pytest.raises(NotFoundError):
            await stack.runtime.js.get_last_msg(names.events_stream, names.run_state(state))
    last = await stack.runtime.js.get_last_msg(names.logs_stream, names.run_log(run_id))
    assert last.data is not None
    assert not parse_log_chunk(last.data).HasField("end")
    assert await _lease(stack, run_id) == ("active", None)


async def test_a_launcher_whose_lease_was_taken_over_stops_following_the_run_and_reports_nothing(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    run_id, _, holder = await _blocked_run(stack, client, tmp_path, "fenced-heartbeat")
    await _take_over(stack, run_id)
    await holder.heartbeat()
    # Its process is ended (a local run is the launcher's child), and neither its end nor its state is published:
    # they are the new holder's to report.
    await wait_until(lambda: holder.active_runs == 0, message="the launcher to let go of the run")
    await _reported_nothing(stack, run_id)


async def test_a_run_that_ends_after_its_lease_was_taken_over_is_reported_by_no_one_but_the_holder(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    run_id, release, holder = await _blocked_run(stack, client, tmp_path, "fenced-finish")
    await _take_over(stack, run_id)
    # As after a stall longer than half a TTL: the launcher no longer knows it holds the lease, so it asks the
    # database before it reports the end (a recent heartbeat or claim would vouch for it, even in an outage).
    for active in holder._active.values():
        active.held_since = None
    release.touch()
    await wait_until(lambda: holder.active_runs == 0, message="the run to end")
    await _reported_nothing(stack, run_id)
