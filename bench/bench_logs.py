"""Log throughput and follower latency of the embedded default.

Starts `ame server` (its own nats-server and PostgreSQL in a temporary data directory) as a subprocess, then:

1. a chatty run prints N lines as fast as it can, followed live by 1 and then by 3 followers (REST SSE, gRPC,
   and the synchronous SDK); it reports the rate at which the launcher took the lines in (their `at` stamps), and,
   from the moment the output's end reached the bus, how long until each follower had received the last line;
   every follower must receive every line, in order;
2. once the archive holds that run's output, a follower of the ended run (gRPC) reads it back from the archive:
   lines/s;
3. a steady run prints a line every 50 ms with its wall-clock time; a REST SSE and a gRPC follower report the delay
   from print to receipt, p50 and p99.

    uv run python bench/bench_logs.py [--lines 100000] [--steady 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import nats
from embedded import ServerDidNotStart, embedded_server, server_token

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogLine
from ame.sdk import Client
from ame.sdk.credentials import aio_channel, bearer

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def chatty_command(lines: int) -> str:
    code = f"import sys\nw = sys.stdout.write\nfor i in range({lines}):\n    w(f'line {{i}} of a chatty run\\n')\n"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def steady_command(lines: int) -> str:
    code = (
        "import time\n"
        f"for i in range({lines}):\n"
        "    print(f'{time.time():.6f} {i}', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Received:
    """What one follower received: (seq, text, at) per line, and when the last line and the end arrived."""

    def __init__(self, name: str, on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.seqs: list[int] = []
        self.texts: list[str] = []
        self.first_at: str = ""
        self.last_at: str = ""
        self.last_line_time = 0.0
        self.end: dict[str, object] | None = None
        self._on_line = on_line

    def lines(self, seqs: list[int], texts: list[str], first_at: Callable[[], str], last_at: Callable[[], str]) -> None:
        """A batch of consecutive lines; their times are read (lazily: some clients pay to format them) only for
        the first line of all and the last of each batch."""
        if not seqs:
            return
        now = time.time()
        if not self.seqs:
            self.first_at = first_at()
        self.seqs += seqs
        self.texts += texts
        if self._on_line is not None:
            for text in texts:
                self._on_line(text)
        self.last_at = last_at()
        self.last_line_time = now

    def check(self, expected: list[str]) -> str:
        if self.end is None:
            return f"{self.name}: no end"
        if self.seqs != list(range(len(expected))):
            return f"{self.name}: {len(self.seqs)} lines, not numbered 0..{len(expected) - 1} in order"
        if self.texts != expected:
            return f"{self.name}: texts differ"
        return ""


async def follow_sse(rest: httpx.AsyncClient, run_id: str, into: Received) -> None:
    async with rest.stream("GET", f"/v1/runs/{run_id}/logs", timeout=300) as response:
        response.raise_for_status()
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                batch = data["lines"] if kind == "lines" else [data] if kind == "line" else []
                if batch:
                    into.lines(
                        [x["seq"] for x in batch],
                        [x["text"] for x in batch],
                        lambda: batch[0]["at"],  # noqa: B023 - called before the next batch
                        lambda: batch[-1]["at"],  # noqa: B023
                    )
                if kind == "end":
                    into.end = data
                    return


def _pb_at(line: object) -> str:
    return line.at.ToJsonString()  # type: ignore[attr-defined]


async def follow_grpc(stub: ame_service_pb2_grpc.AmeServiceStub, run_id: str, into: Received) -> None:
    request = ame_service_pb2.FollowLogsRequest(run_id=run_id)
    if "batched" in ame_service_pb2.FollowLogsRequest.DESCRIPTOR.fields_by_name:
        request.batched = True  # type: ignore[attr-defined]
    async for event in stub.FollowLogs(request, timeout=300):
        kind = event.WhichOneof("event")
        if kind == "end":
            into.end = {"state": event.end.state}
            return
        lines = [event.line] if kind == "line" else getattr(event, kind).lines
        into.lines(
            [x.seq for x in lines],
            [x.text for x in lines],
            lambda: _pb_at(lines[0]),  # noqa: B023 - called before the next event
            lambda: _pb_at(lines[-1]),  # noqa: B023
        )


def follow_sdk(target: str, run_id: str, into: Received, token: str) -> None:
    with Client(target, timeout=300, token=token) as client:
        batches = getattr(client, "follow_log_batches", None)
        if batches is not None:
            for batch in batches(run_id):
                if isinstance(batch, list):
                    _sdk_lines(into, batch)
                else:
                    into.end = {"state": batch.state.value}
            return
        for event in client.follow_logs(run_id):
            if isinstance(event, LogLine):
                _sdk_lines(into, [event])
            else:
                into.end = {"state": event.state.value}


def _sdk_lines(into: Received, batch: list[LogLine]) -> None:
    into.lines(
        [x.seq for x in batch],
        [x.text for x in batch],
        lambda: batch[0].at.isoformat(),
        lambda: batch[-1].at.isoformat(),
    )


def _ts(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


class Bench:
    def __init__(self, info: dict[str, str]) -> None:
        self.info = info
        self.finished: dict[str, asyncio.Future[None]] = {}

    async def __aenter__(self) -> Bench:
        self.nc = await nats.connect(self.info["nats_url"])
        await self.nc.subscribe("ame.evt.run.*", cb=self._on_state)
        self.token = server_token(self.info)
        self.channel = aio_channel(self.info["grpc_target"], self.token)
        self.stub = ame_service_pb2_grpc.AmeServiceStub(self.channel)
        self.rest = httpx.AsyncClient(base_url=self.info["rest_url"], headers=bearer(self.token))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rest.aclose()
        await self.channel.close()
        await self.nc.close()

    async def _on_state(self, msg: nats.aio.msg.Msg) -> None:
        event = run_pb2.RunStateChanged()
        event.ParseFromString(msg.data)
        fut = self.finished.get(event.run_id)
        if msg.subject.rsplit(".", 1)[1] in TERMINAL and fut is not None and not fut.done():
            fut.set_result(None)

    async def submit(self, task: str, command: str) -> str:
        spec = run_pb2.RunSpec(project="bench", task=task, command=command)
        response = await self.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=spec))
        self.finished[response.run.id] = asyncio.get_running_loop().create_future()
        return response.run.id

    async def followers(self, run_id: str, kinds: list[str], received: list[Received]) -> None:
        jobs = []
        for kind, into in zip(kinds, received, strict=True):
            if kind == "sse":
                jobs.append(follow_sse(self.rest, run_id, into))
            elif kind == "grpc":
                jobs.append(follow_grpc(self.stub, run_id, into))
            else:
                jobs.append(asyncio.to_thread(follow_sdk, self.info["grpc_target"], run_id, into, self.token))
        await asyncio.wait_for(asyncio.gather(*jobs), 600)

    async def chatty(self, lines: int, kinds: list[str]) -> tuple[int, str]:
        expected = [f"line {i} of a chatty run" for i in range(lines)]
        received = [Received(f"{k} follower") for k in kinds]
        run_id = await self.submit(f"chatty-{len(kinds)}", chatty_command(lines))
        await self.followers(run_id, kinds, received)
        await asyncio.wait_for(self.finished[run_id], 60)
        problems = [p for r in received if (p := r.check(expected))]
        first = received[0]
        produced = lines / max(_ts(first.last_at) - _ts(first.first_at), 1e-6)
        # The run's end: when the launcher read its last line (its stamp), which is when the run printed it.
        run_end = _ts(first.last_at)
        after_end = [r.last_line_time - run_end for r in received]
        print(
            f"chatty run, {lines} lines, {len(kinds)} live follower(s) ({', '.join(kinds)}): "
            f"produced at {produced:,.0f} lines/s; last line received "
            + ", ".join(f"{a:.2f} s" for a in after_end)
            + " after the run printed it"
            + ("; every line, in order" if not problems else "; PROBLEMS: " + "; ".join(problems))
        )
        return (1 if problems else 0), run_id

    async def archive_replay(self, run_id: str, lines: int) -> int:
        conn = await asyncpg.connect(self.info["postgres_dsn"])
        try:
            deadline = time.monotonic() + 120
            while await conn.fetchval("SELECT count(*) FROM log_ends WHERE run_id = $1", run_id) == 0:
                if time.monotonic() > deadline:
                    print("archive replay: the archive never completed")
                    return 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        expected = [f"line {i} of a chatty run" for i in range(lines)]
        rates = []
        problems = ""
        for kind in ("grpc", "sse"):
            into = Received(f"{kind} follower after the end")
            start = time.perf_counter()
            await self.followers(run_id, [kind], [into])
            rates.append(lines / (time.perf_counter() - start))
            problems = problems or into.check(expected)
        print(
            f"archive replay of {lines} lines by a follower after the end: gRPC {rates[0]:,.0f} lines/s, "
            f"REST SSE {rates[1]:,.0f} lines/s" + (f"; PROBLEM: {problems}" if problems else "")
        )
        return 1 if problems else 0

    async def steady(self, lines: int) -> int:
        latencies: dict[str, list[float]] = {"sse": [], "grpc": []}

        def recorder(kind: str) -> Callable[[str], None]:
            def record(text: str) -> None:
                latencies[kind].append(time.time() - float(text.split(" ", 1)[0]))

            return record

        received = [Received(f"{k} follower", recorder(k)) for k in latencies]
        run_id = await self.submit("steady", steady_command(lines))
        await self.followers(run_id, list(latencies), received)
        for kind, values in latencies.items():
            name = "REST SSE" if kind == "sse" else "gRPC"
            print(
                f"steady run, a line every 50 ms, {name} follower: print -> received "
                f"p50 {pct(values, 50) * 1000:.1f} ms   p99 {pct(values, 99) * 1000:.1f} ms   (n={len(values)})"
            )
        return 0 if all(len(v) == lines for v in latencies.values()) else 1


async def measure(info: dict[str, str], lines: int, steady: int) -> int:
    async with Bench(info) as bench:
        warm = await bench.submit("warmup", chatty_command(100))
        await bench.followers(warm, ["sse", "grpc", "sdk"], [Received(k) for k in ("sse", "grpc", "sdk")])
        rc, _ = await bench.chatty(lines, ["sse"])
        rc3, run_id = await bench.chatty(lines, ["sse", "grpc", "sdk"])
        rc_archive = await bench.archive_replay(run_id, lines)
        rc_steady = await bench.steady(steady)
    return rc or rc3 or rc_archive or rc_steady


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--steady", type=int, default=200, help="lines of the steady run, one every 50 ms")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, writing its stats here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ame-bench-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
        try:
            with embedded_server(Path(home), env, profile=args.profile) as info:
                print(
                    f"machine: {os.cpu_count()} cores; embedded server (nats-server + PostgreSQL + 4 services, "
                    "1 process)"
                )
                return asyncio.run(measure(info, args.lines, args.steady))
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
