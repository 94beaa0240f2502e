"""The transactional outbox's relay against the real stack: what the fast path did not publish gets published once."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from ame.domain import RunSpec, RunState, TriggerKind, new_run_id
from ame_api import convert
from ame_api.repositories import runs as runs_repo
from ame_api.runs import OutboxRelay
from ame_api.settings import ApiSettings
from ame_platform.bus.publisher import MSG_ID, headers_for
from tests.integration.clients import py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

# The stack's own relay only takes rows older than its default outbox_retry_after (2s). Rows here are made
# one second old, so within a test only the relays built below, with a 0.5s threshold, can see them.
AGE = "1 second"


def _relay(stack: Stack, retry_after: float) -> OutboxRelay:
    settings = ApiSettings(nats=stack.nats, postgres=stack.postgres, outbox_retry_after=retry_after)
    return OutboxRelay(stack.runtime, settings)


def _subject(stack: Stack, name: str) -> str:
    # On the events stream (so JetStream stores it) but not a subject any service consumes.
    return f"{stack.nats.prefix}.evt.outboxtest.{name}"


async def _add(stack: Stack, subject: str, payload: bytes, headers: dict[str, str]) -> int:
    async with stack.runtime.pool.acquire() as conn, conn.transaction():
        outbox_id = await runs_repo.add_outbox(
            conn, msg_id=headers.get(MSG_ID, ""), subject=subject, payload=payload, headers=headers
        )
        await conn.execute(f"UPDATE outbox SET created_at = now() - interval '{AGE}' WHERE id = $1", outbox_id)
    return outbox_id


async def _outbox_ids(stack: Stack) -> list[int]:
    async with stack.runtime.pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM outbox ORDER BY id")]


async def _messages_on(stack: Stack, subject: str) -> list[Msg]:
    """Every message stored on `subject`, read with a JetStream consumer of its own."""
    sub = await stack.runtime.js.pull_subscribe(subject, stream=stack.runtime.names.events_stream)
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        messages: list[Msg] = []
        while len(messages) < pending:
            messages += await sub.fetch(batch=pending - len(messages), timeout=5)
        for msg in messages:
            await msg.ack()
        return messages
    finally:
        await sub.unsubscribe()


async def test_an_old_outbox_row_is_published_with_its_headers_and_deleted(stack: Stack) -> None:
    subject = _subject(stack, "single")
    outbox_id = await _add(stack, subject, b"payload-1", headers_for("outbox:single"))

    # Younger than the relay's threshold: the fast path may still be publishing it.
    assert await _relay(stack, retry_after=30).relay_once() == 0
    assert await _outbox_ids(stack) == [outbox_id]

    assert await _relay(stack, retry_after=0.5).relay_once() == 1
    assert await _outbox_ids(stack) == []
    (msg,) = await _messages_on(stack, subject)
    assert msg.data == b"payload-1"
    assert msg.headers is not None and msg.headers[MSG_ID] == "outbox:single"


async def test_two_relays_at_once_publish_each_row_once(stack: Stack) -> None:
    subject = _subject(stack, "race")
    n = 25
    # No Nats-Msg-Id on these rows, so JetStream would store a double publish: only the row locks prevent it.
    for i in range(n):
        await _add(stack, subject, f"row-{i}".encode(), {"X-Row": str(i)})

    first, second = _relay(stack, 0.5), _relay(stack, 0.5)
    sent = await asyncio.gather(first.relay_once(), second.relay_once())

    assert sum(sent) == n
    assert await _outbox_ids(stack) == []
    messages = await _messages_on(stack, subject)
    assert sorted(m.data for m in messages) == sorted(f"row-{i}".encode() for i in range(n))
    assert sorted(int(m.headers["X-Row"]) for m in messages if m.headers is not None) == list(range(n))


async def test_a_launch_the_fast_path_missed_is_relayed_and_the_run_succeeds(stack: Stack) -> None:
    run_id = new_run_id()
    spec = RunSpec(project="outbox", task="relayed", command=py("print('relayed')"))
    names = stack.runtime.names
    msg_id = f"launch:{run_id}:1"
    # What submit() commits before its fast-path publish; here the publish "failed".
    async with stack.runtime.pool.acquire() as conn, conn.transaction():
        await runs_repo.create_run(
            conn,
            run_id=run_id,
            organisation="default",
            spec=spec,
            trigger=TriggerKind.API,
            parent_run_id="",
            idempotency_key=None,
        )
        outbox_id = await runs_repo.add_outbox(
            conn,
            msg_id=msg_id,
            subject=names.run_launch,
            payload=convert.launch_command(run_id, 1, "default", spec),
            headers=headers_for(msg_id),
        )
        await conn.execute(f"UPDATE outbox SET created_at = now() - interval '{AGE}' WHERE id = $1", outbox_id)

    assert await _relay(stack, 0.5).relay_once() == 1

    async def succeeded() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            run = await runs_repo.get_run(conn, run_id, organisation="default")
        return run.state == RunState.SUCCEEDED and run.exit_code == 0

    await wait_until(succeeded, timeout=20, message="the relayed run to succeed")
    assert await _outbox_ids(stack) == []
    async with stack.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM leases WHERE run_id = $1::uuid", run_id) == 1
