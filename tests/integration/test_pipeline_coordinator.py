"""The pipeline coordinator against real NATS and PostgreSQL: redelivered events decide nothing twice, and
several scheduler replicas (separate processes, one SIGKILLed mid-pipeline) run each step exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from pydantic import SecretStr

from ame import bus_messages, codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.domain import PipelineStage, PipelineStep, RunSpec, RunState, new_run_id
from ame_platform.runtime import Runtime, open_runtime
from ame_platform.settings import NatsSettings, PostgresSettings, TelemetrySettings
from ame_scheduler.pipelines import store
from ame_scheduler.pipelines.coordinator import Coordinator
from ame_scheduler.settings import SchedulerSettings
from ame_server.server import migrate_all
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _pipeline(stages: list[list[tuple[str, str]]]) -> RunSpec:
    return RunSpec(
        project="pipes",
        task="main",
        pipeline=[
            PipelineStage(
                steps=[
                    PipelineStep(name=name, spec=RunSpec(project="pipes", task=name, command=cmd))
                    for name, cmd in stage
                ]
            )
            for stage in stages
        ],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def runtime(nats_url: str, pg_dsn: str, bus_prefix: str) -> AsyncIterator[Runtime]:
    """NATS and PostgreSQL with every service's schema, and no service running: the test drives a coordinator."""
    await migrate_all(pg_dsn)
    nats = NatsSettings(url=nats_url, prefix=bus_prefix)
    postgres = PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=5)
    async with open_runtime(name="test", nats=nats, postgres=postgres, telemetry=TelemetrySettings()) as rt:
        yield rt


async def test_redelivered_events_submit_each_step_once_and_end_the_pipeline_once(runtime: Runtime) -> None:
    """The coordinator alone, each start and each step end delivered twice (no api: its step requests are
    counted on the bus, and the test plays the steps' ends)."""
    rt = runtime

    def _msg(data: bytes) -> Msg:
        return Msg(_client=rt.nc, subject="test", data=data)

    seen: dict[str, int] = {}

    async def count(msg: Msg) -> None:
        key = (msg.headers or {}).get("Nats-Msg-Id", "")
        seen[key] = seen.get(key, 0) + 1

    # A core subscription sees every publish, duplicates that JetStream would drop included.
    sub = await rt.nc.subscribe(rt.names.pipeline_step_requested, cb=count)
    parent_states = await rt.nc.subscribe(rt.names.run_states_wildcard, cb=count)
    try:
        coordinator = Coordinator(rt, SchedulerSettings())
        parent = new_run_id()
        spec = _pipeline([[("a", "true"), ("b", "true")], [("c", "true")]])
        started = bus_messages.encode_pipeline_started(parent, "default", spec, "test")
        await coordinator.handle_started(_msg(started))
        await coordinator.handle_started(_msg(started))
        await wait_until(lambda: len([k for k in seen if k.startswith("pipeline:")]) == 2, 10, message="stage 1")
        async with rt.pool.acquire() as conn:
            children = {
                r["name"]: str(r["child_run_id"])
                for r in await conn.fetch(
                    "SELECT name, child_run_id FROM pipeline_steps WHERE parent_run_id = $1::uuid", parent
                )
            }

        # Time-ordered like every run id, so `ame runs list` (newest id first) shows the steps by the parent.
        assert {uuid.UUID(child).version for child in children.values()} == {7}

        def ended(name: str, state: RunState = RunState.SUCCEEDED) -> bytes:
            return codecs.state_changed_pb(children[name], 1, state, 0, "").SerializeToString()

        for _ in range(2):
            await coordinator.handle_run_event(_msg(ended("a")))
        # Stage 2 waits for the whole group.
        assert f"pipeline:{parent}:c" not in seen
        for _ in range(2):
            await coordinator.handle_run_event(_msg(ended("b")))
        await wait_until(lambda: f"pipeline:{parent}:c" in seen, 10, message="stage 2")
        for _ in range(2):
            await coordinator.handle_run_event(_msg(ended("c")))
        await wait_until(lambda: f"state:{parent}:1:succeeded" in seen, 10, message="the pipeline's end")
        await rt.nc.flush()
    finally:
        await sub.unsubscribe()
        await parent_states.unsubscribe()
    assert {k: v for k, v in seen.items() if k.startswith("pipeline:")} == {
        f"pipeline:{parent}:a": 1,
        f"pipeline:{parent}:b": 1,
        f"pipeline:{parent}:c": 1,
    }
    assert seen[f"state:{parent}:1:running"] == 1
    assert seen[f"state:{parent}:1:succeeded"] == 1
    async with rt.pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT name, state FROM pipeline_steps WHERE parent_run_id = $1::uuid", parent))
        assert states == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
        assert await conn.fetchval("SELECT count(*) FROM pipeline_outbox") == 0


async def test_a_pipeline_past_its_timeout_cancels_its_running_step_and_ends_timed_out(runtime: Runtime) -> None:
    rt = runtime
    seen: dict[str, bytes] = {}

    async def keep(msg: Msg) -> None:
        seen[(msg.headers or {}).get("Nats-Msg-Id", "")] = msg.data

    subs = [
        await rt.nc.subscribe(subject, cb=keep)
        for subject in (rt.names.run_states_wildcard, rt.names.run_cancel_wildcard, rt.names.pipeline_step_requested)
    ]
    try:
        coordinator = Coordinator(rt, SchedulerSettings())
        parent = new_run_id()
        spec = _pipeline([[("slow", "sleep 60")], [("after", "true")]]).model_copy(update={"timeout_seconds": 0.5})
        await coordinator.handle_started(
            Msg(_client=rt.nc, data=bus_messages.encode_pipeline_started(parent, "default", spec, "test"))
        )
        await wait_until(lambda: f"pipeline:{parent}:slow" in seen, 10, message="the first step's request")
        child = bus_messages.parse_step_requested(seen[f"pipeline:{parent}:slow"]).run_id
        running = codecs.state_changed_pb(child, 1, RunState.RUNNING, None, "").SerializeToString()
        await coordinator.handle_run_event(Msg(_client=rt.nc, data=running))

        async def expired() -> bool:
            await coordinator.expire()
            return f"cancel:{child}:1" in seen

        # Polls the periodic pass until the deadline (0.5 s after the start) has passed.
        await wait_until(expired, 10, message="the timeout to cancel the running step")
        assert f"state:{parent}:1:timed_out" not in seen  # not before its running step has ended
        ended = codecs.state_changed_pb(child, 1, RunState.CANCELLED, None, "").SerializeToString()
        await coordinator.handle_run_event(Msg(_client=rt.nc, data=ended))
        await wait_until(lambda: f"state:{parent}:1:timed_out" in seen, 10, message="the pipeline's end")
    finally:
        for sub in subs:
            await sub.unsubscribe()
    end = codecs.parse_state_changed(seen[f"state:{parent}:1:timed_out"])
    assert (end.exit_code, end.reason) == (124, "pipeline timed out after 0.5 s")
    assert f"pipeline:{parent}:after" not in seen
    async with rt.pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT name, state FROM pipeline_steps WHERE parent_run_id = $1::uuid", parent))
    assert states == {"slow": "cancelled", "after": "skipped"}


@pytest.fixture
def replicas() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
async def test_three_coordinator_replicas_one_killed_run_every_step_once(
    stack: Stack, replicas: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Two more scheduler processes share the coordinator's consumers with the stack's own; one is SIGKILLed
    once the pipeline is under way. A 4-stage pipeline of 12 steps (groups of three) succeeds, each step's
    command ran once (each appends its name to a file), and there is one child run per step."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_NATS_URL=stack.nats.url,
        AME_NATS_PREFIX=stack.nats.prefix,
        AME_POSTGRES_DSN=stack.postgres.dsn.get_secret_value(),
        AME_SCHEDULER_PIPELINE_RELAY_AFTER="1s",
        AME_SCHEDULER_PIPELINE_RELAY_INTERVAL="0.2",
        AME_LIFECYCLE_GRACEFUL_TIMEOUT="2s",
    )
    for i in range(2):
        log = (tmp_path / f"scheduler-{i}.log").open("wb")
        replicas.append(subprocess.Popen([sys.executable, "-m", "ame_scheduler"], env=env, stdout=log, stderr=log))
    marks = tmp_path / "marks"
    gate = tmp_path / "go"
    stages = [
        [(f"s{stage}-{i}", py(f"import pathlib; open({str(marks)!r}, 'a').write('s{stage}-{i}\\n')")) for i in range(3)]
        for stage in range(4)
    ]
    # The first step waits for the gate, so the kill falls while the pipeline runs.
    first_name, first_cmd = stages[0][0]
    wait = py(f"import pathlib, time\nwhile not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)")
    stages[0][0] = (first_name, f"{wait} && {first_cmd}")
    client = Grpc(stack.grpc_target)
    try:
        spec = codecs.run_spec_to_pb(_pipeline(stages))
        parent = (await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=spec))).run
        await wait_until(lambda: marks.exists() and len(marks.read_text().split()) == 2, 60, message="stage 1 running")
        replicas[0].send_signal(signal.SIGKILL)
        replicas[0].wait()
        gate.touch()

        async def ended() -> bool:
            return (await client.get(parent.id)).state not in (1, 2, 3)

        await wait_until(ended, 120, message="the pipeline's end")
        final = await client.get(parent.id)
        children = (
            await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(parent_run_id=parent.id, page_size=100))
        ).runs
    finally:
        await client.close()
    assert RunState(codecs.state_from_pb(final.state)) == RunState.SUCCEEDED, final.reason
    names = sorted(marks.read_text().split())
    assert names == sorted(name for stage in stages for name, _ in stage)
    assert len(children) == 12
    assert all(codecs.state_from_pb(c.state) == RunState.SUCCEEDED for c in children)


async def test_the_outbox_rows_a_decision_writes_are_its_messages_in_order(runtime: Runtime) -> None:
    """A decision publishes the rows it wrote without reading them back: each row must be its own message."""
    messages = [store.Outgoing(f"outbox-order-{i}", f"test.subject.{i % 3}", bytes([i]) * (i + 1)) for i in range(40)]
    async with runtime.pool.acquire() as conn:
        async with conn.transaction():
            rows = await store.add_outgoing(conn, messages)
        try:
            stored = {
                int(r["id"]): (r["msg_id"], r["subject"], bytes(r["payload"]), json.loads(r["headers"]))
                for r in await conn.fetch(
                    "SELECT id, msg_id, subject, payload, headers FROM pipeline_outbox WHERE id = ANY($1::bigint[])",
                    [row.id for row in rows],
                )
            }
            assert len(rows) == len(messages) == len(stored)
            assert [stored[row.id] for row in rows] == [
                (m.msg_id, m.subject, m.payload, row.headers) for m, row in zip(messages, rows, strict=True)
            ]
            assert [row.headers["Nats-Msg-Id"] for row in rows] == [m.msg_id for m in messages]
        finally:
            await store.delete_outbox(conn, [row.id for row in rows])
