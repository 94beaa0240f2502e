"""A chatty run's output reaches every follower whole and in order, over REST SSE, gRPC and the SDK, in batches.

The speed target (every line within 2 s of the run's end, archive replay at 50,000 lines/s) is measured by
bench/bench_logs.py; the deadlines here are generous so that a loaded 2-core CI machine passes.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ame.domain import LogEnd
from ame.sdk import Client
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

CHATTY_LINES = 100_000
DEADLINE = 240.0


def _chatty(n: int) -> str:
    return py(f"import sys\nw = sys.stdout.write\nfor i in range({n}):\n    w(f'line {{i}}\\n')")


async def _sse_follow(rest: httpx.AsyncClient, run_id: str) -> tuple[list[tuple[int, str]], dict[str, object], int]:
    """(seq, text) of every line, the end event, and how many `lines` events carried them."""
    lines: list[tuple[int, str]] = []
    events = 0
    async with rest.stream("GET", f"/v1/runs/{run_id}/logs", timeout=DEADLINE) as response:
        response.raise_for_status()
        kind = ""
        async for text in response.aiter_lines():
            if text.startswith("event: "):
                kind = text.removeprefix("event: ")
            elif text.startswith("data: "):
                data = json.loads(text.removeprefix("data: "))
                if kind == "end":
                    return lines, data, events
                assert kind == "lines", kind
                events += 1
                lines.extend((line["seq"], line["text"]) for line in data["lines"])
    raise AssertionError("the SSE stream closed without an end event")


def _sdk_follow(target: str, run_id: str) -> tuple[list[tuple[int, str]], LogEnd | None, int]:
    lines: list[tuple[int, str]] = []
    batches = 0
    with Client(target, timeout=DEADLINE) as client:
        for batch in client.follow_log_batches(run_id):
            if isinstance(batch, LogEnd):
                return lines, batch, batches
            batches += 1
            lines.extend((line.seq, line.text) for line in batch)
    return lines, None, batches


def _same(actual: list[tuple[int, str]], expected: list[tuple[int, str]]) -> bool:
    """Equal, or an AssertionError that shows where they part (a diff of 100,000 lines says nothing)."""
    if actual == expected:
        return True
    at = next(
        (i for i, (a, e) in enumerate(zip(actual, expected, strict=False)) if a != e), min(len(actual), len(expected))
    )
    raise AssertionError(
        f"{len(actual)} lines where {len(expected)} were expected; first difference at index {at}: "
        f"{actual[max(0, at - 2) : at + 3]} != {expected[max(0, at - 2) : at + 3]}"
    )


@pytest.mark.slow
async def test_three_live_followers_of_a_chatty_run_get_every_line_in_order(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient
) -> None:
    run = await client.submit(_chatty(CHATTY_LINES))
    sse, grpc_followed, sdk = await asyncio.wait_for(
        asyncio.gather(
            _sse_follow(rest, run.id),
            client.follow(run.id),
            asyncio.to_thread(_sdk_follow, stack.grpc_target, run.id),
        ),
        DEADLINE,
    )
    expected = [(i, f"line {i}") for i in range(CHATTY_LINES)]

    sse_lines, sse_end, sse_events = sse
    assert _same(sse_lines, expected)
    assert sse_end["state"] == "succeeded"
    assert sse_end["total_lines"] == CHATTY_LINES
    # Batched: many lines to an event (the launcher's chunks hold up to 256).
    assert sse_events <= CHATTY_LINES // 10

    assert _same([(seq, text) for seq, _, text in grpc_followed.lines], expected)
    assert grpc_followed.end is not None
    assert grpc_followed.end.end.total_lines == CHATTY_LINES

    sdk_lines, sdk_end, sdk_batches = sdk
    assert _same(sdk_lines, expected)
    assert sdk_end is not None
    assert sdk_end.exit_code == 0
    assert sdk_batches <= CHATTY_LINES // 10

    # After the end, from the archive (or the bus while the archive catches up): the same lines, also batched.
    late_lines, late_end, late_events = await asyncio.wait_for(_sse_follow(rest, run.id), DEADLINE)
    assert _same(late_lines, expected)
    assert late_end["state"] == "succeeded"
    assert late_events <= CHATTY_LINES // 10


async def test_a_follower_that_does_not_ask_for_batches_gets_one_message_per_line(client: Grpc) -> None:
    run = await client.submit(_chatty(600))
    batched = await asyncio.wait_for(client.follow(run.id), 60)
    per_line = await asyncio.wait_for(client.follow(run.id, batched=False), 60)
    from_middle = await asyncio.wait_for(client.follow(run.id, from_seq=450, batched=False), 60)
    expected = [f"line {i}" for i in range(600)]
    assert batched.texts == expected
    assert per_line.texts == expected
    assert from_middle.texts == expected[450:]
    assert per_line.end is not None
    assert per_line.end.end.total_lines == 600


async def test_sse_lines_events_carry_the_last_seq_as_their_id(rest: httpx.AsyncClient, client: Grpc) -> None:
    run = await client.submit(_chatty(300))
    ids: list[int] = []
    last_seqs: list[int] = []
    async with rest.stream("GET", f"/v1/runs/{run.id}/logs", timeout=60) as response:
        kind = ""
        async for text in response.aiter_lines():
            if text.startswith("event: "):
                kind = text.removeprefix("event: ")
            elif text.startswith("id: "):
                ids.append(int(text.removeprefix("id: ")))
            elif text.startswith("data: ") and kind == "lines":
                last_seqs.append(json.loads(text.removeprefix("data: "))["lines"][-1]["seq"])
    assert last_seqs
    assert last_seqs[-1] == 299
    assert ids == last_seqs
