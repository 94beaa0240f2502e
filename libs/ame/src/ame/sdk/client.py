"""A synchronous gRPC client for the AME server.

from ame.sdk import Client
from ame.domain import RunSpec

with Client() as ame:
    run = ame.submit_run(RunSpec(project="demo", task="hello", command="python -c 'print(1)'"))
    for event in ame.follow_logs(run.id):
        print(event)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import grpc

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.domain import LogEnd, LogLine, Run, RunSpec, RunState
from ame.sdk import convert
from ame.sdk.errors import AmeError, InvalidArgument, NotFound, Unavailable

DEFAULT_TARGET = "127.0.0.1:50051"

P = ParamSpec("P")
T = TypeVar("T")


def discover_target() -> str:
    """`AME_GRPC_TARGET`, else what a local `ame server` wrote into its data directory, else the default."""
    if target := os.environ.get("AME_GRPC_TARGET"):
        return target
    home = Path(os.environ.get("AME_HOME") or Path.home() / ".ame").expanduser()
    try:
        info = json.loads((home / "server" / "server.json").read_text())
        return str(info["grpc_target"])
    except (OSError, ValueError, KeyError):
        return DEFAULT_TARGET


def _translate(target: str, exc: grpc.RpcError) -> AmeError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"cannot reach the AME server at {target} ({details}); is `ame server` running?")
    return AmeError(details)


class Client:
    def __init__(self, target: str | None = None, *, timeout: float = 30.0) -> None:
        self.target = target or discover_target()
        self._timeout = timeout
        self._channel = grpc.insecure_channel(self.target)
        self._stub = ame_service_pb2_grpc.AmeServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None

    def submit_run(self, spec: RunSpec, *, idempotency_key: str | None = None) -> Run:
        request = convert.submit_request(spec, idempotency_key)
        response = self._call(self._stub.SubmitRun, request, timeout=self._timeout, wait_for_ready=False)
        return convert.run_from_pb(response.run)

    def get_run(self, run_id: str) -> Run:
        response = self._call(self._stub.GetRun, ame_service_pb2.GetRunRequest(run_id=run_id), timeout=self._timeout)
        return convert.run_from_pb(response.run)

    def list_runs(
        self,
        *,
        project: str | None = None,
        task: str | None = None,
        states: list[RunState] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Newest first, at most `limit` runs (following pages as needed)."""
        runs: list[Run] = []
        token = ""
        while len(runs) < limit:
            request = convert.list_request(project, task, states, min(limit - len(runs), 1000), token)
            response = self._call(self._stub.ListRuns, request, timeout=self._timeout)
            runs.extend(convert.run_from_pb(r) for r in response.runs)
            token = response.next_page_token
            if not token:
                break
        return runs

    def cancel_run(self, run_id: str, reason: str = "") -> Run:
        request = ame_service_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        response = self._call(self._stub.CancelRun, request, timeout=self._timeout)
        return convert.run_from_pb(response.run)

    def follow_logs(self, run_id: str, from_seq: int = 0) -> Iterator[LogLine | LogEnd]:
        """Every line from `from_seq` on, in order, then the LogEnd; blocks while the run is going."""
        for batch in self.follow_log_batches(run_id, from_seq):
            if isinstance(batch, LogEnd):
                yield batch
            else:
                yield from batch

    def follow_log_batches(self, run_id: str, from_seq: int = 0) -> Iterator[list[LogLine] | LogEnd]:
        """Like `follow_logs`, with the lines in lists of consecutive lines: as many as the server had ready at
        once. Cheaper for a chatty run (thousands of lines a second): one message per list, not per line."""
        request = ame_service_pb2.FollowLogsRequest(run_id=run_id, from_seq=from_seq, batched=True)
        stream = self._stub.FollowLogs(request)
        try:
            for event in stream:
                yield convert.follow_batch(event)
        except grpc.RpcError as exc:
            raise _translate(self.target, exc) from None
        finally:
            stream.cancel()
