"""Async clients for driving a test stack over gRPC and REST the way users do."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import aio_channel, discover_token

PY = sys.executable


def py(code: str) -> str:
    """A shell command line that runs `code` with this interpreter."""
    return f"{shlex.quote(PY)} -c {shlex.quote(code)}"


@dataclass
class Followed:
    lines: list[tuple[int, str, str]]
    end: ame_service_pb2.FollowLogsResponse | None

    @property
    def texts(self) -> list[str]:
        return [text for _, _, text in self.lines]


class Grpc:
    def __init__(self, target: str, token: str | None = None) -> None:
        """Every call sends `token` (default: the one the SDK would send, `AME_TOKEN` in tests)."""
        self.channel = aio_channel(target, token or discover_token())
        self.stub = ame_service_pb2_grpc.AmeServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def submit(self, command: str, **spec: object) -> run_pb2.Run:
        request = ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(command=command, **spec))  # type: ignore[arg-type]
        return (await self.stub.SubmitRun(request)).run

    async def get(self, run_id: str) -> run_pb2.Run:
        return (await self.stub.GetRun(ame_service_pb2.GetRunRequest(run_id=run_id))).run

    async def follow(self, run_id: str, from_seq: int = 0, *, batched: bool = True) -> Followed:
        lines: list[tuple[int, str, str]] = []
        end = None
        request = ame_service_pb2.FollowLogsRequest(run_id=run_id, from_seq=from_seq, batched=batched)
        async for event in self.stub.FollowLogs(request):
            kind = event.WhichOneof("event")
            if kind == "line":
                lines.append((event.line.seq, _STREAMS[event.line.stream], event.line.text))
            elif kind == "chunk":
                lines.extend((line.seq, _STREAMS[line.stream], line.text) for line in event.chunk.lines)
            else:
                end = event
        return Followed(lines, end)


_STREAMS = {1: "stdout", 2: "stderr", 3: "system"}


async def sse_events(client: httpx.AsyncClient, path: str) -> AsyncIterator[tuple[str, dict[str, object]]]:
    async with client.stream("GET", path, timeout=30) as response:
        response.raise_for_status()
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))
