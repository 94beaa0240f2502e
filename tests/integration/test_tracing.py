"""A run's spans join into one trace across services: context travels in NATS headers and gRPC metadata."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import aio_channel, discover_token
from tests.integration.clients import py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _spans(stack: Stack) -> list[ReadableSpan]:
    assert stack.runtime.telemetry.memory is not None
    return list(stack.runtime.telemetry.memory.get_finished_spans())


async def test_submit_launch_and_events_share_the_callers_trace(stack: Stack) -> None:
    tracer = stack.runtime.telemetry.tracer("test-client")
    async with aio_channel(stack.grpc_target, discover_token()) as channel:
        stub = ame_service_pb2_grpc.AmeServiceStub(channel)
        with tracer.start_as_current_span("client call") as client_span:
            metadata: dict[str, str] = {}
            inject(metadata)
            response = await stub.SubmitRun(
                ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command=py("print('traced')"))),
                metadata=tuple(metadata.items()),
            )
    trace_id = client_span.get_span_context().trace_id
    run_id = response.run.id

    def joined() -> list[ReadableSpan]:
        spans = [s for s in _spans(stack) if s.context is not None and s.context.trace_id == trace_id]
        names = {s.name for s in spans}
        return spans if {"run submit", "launcher-launch process"} <= names else []

    spans = await wait_until(joined, message="api and launcher spans in the client's trace")
    submit = next(s for s in spans if s.name == "run submit")
    assert submit.attributes is not None and submit.attributes["ame.run_id"] == run_id
    launch = next(s for s in spans if s.name == "launcher-launch process")
    assert launch.kind == trace.SpanKind.CONSUMER
    assert launch.parent is not None
