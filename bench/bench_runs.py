"""Run latency and burst throughput of the embedded default.

Starts `ame server` (its own nats-server and PostgreSQL in a temporary data directory) as a subprocess, then:

1. submits N runs of `python3 -c "print('hello')"` one after another over gRPC and measures, from the moment the
   client sends the submit, when the run's `running` and terminal events appear on the bus;
2. submits a burst of N runs at once and measures the makespan (first submit sent -> last run finished),
   then checks from the registry, the leases and the log archive that every run finished, exactly once, with
   its start and end times.

    uv run python bench/bench_runs.py [--runs 200] [--burst 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import asyncpg
import grpc
import nats
from embedded import ServerDidNotStart, embedded_server

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.contracts.run.v1 import run_pb2

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
COMMAND = f"{shlex.quote(sys.executable)} -c \"print('hello')\""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:24} p50 {pct(values, 50):7.1f} ms   p95 {pct(values, 95):7.1f} ms   "
        f"p99 {pct(values, 99):7.1f} ms   (n={len(values)}, mean {statistics.mean(values) * 1000:.1f} ms)"
    )


class Events:
    """Arrival times of run state events, as any bus subscriber sees them."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.waiters: dict[str, asyncio.Future[None]] = {}

    async def on_msg(self, msg: nats.aio.msg.Msg) -> None:
        now = time.perf_counter()
        event = run_pb2.RunStateChanged()
        event.ParseFromString(msg.data)
        state = msg.subject.rsplit(".", 1)[1]
        self.seen[event.run_id].setdefault(state, now)
        if state in TERMINAL and (fut := self.waiters.get(event.run_id)) and not fut.done():
            fut.set_result(None)

    def finished(self, run_id: str) -> asyncio.Future[None]:
        fut = self.waiters.setdefault(run_id, asyncio.get_running_loop().create_future())
        if TERMINAL & set(self.seen[run_id]) and not fut.done():
            fut.set_result(None)
        return fut


# The server-admin token `ame server` wrote on its first start (none from a server from before tokens).
METADATA: tuple[tuple[str, str], ...] = ()


async def submit(stub: ame_service_pb2_grpc.AmeServiceStub, task: str) -> tuple[str, float]:
    sent = time.perf_counter()
    response = await stub.SubmitRun(
        ame_service_pb2.SubmitRunRequest(spec=run_pb2.RunSpec(project="bench", task=task, command=COMMAND)),
        metadata=METADATA,
    )
    ACCEPTED.append(time.perf_counter() - sent)
    return response.run.id, sent


ACCEPTED: list[float] = []


async def measure(info: dict[str, str], runs: int, burst: int) -> int:
    global METADATA
    token_file = Path(info["data_dir"]) / "admin-token"
    if token_file.exists():
        METADATA = (("authorization", f"Bearer {token_file.read_text().strip()}"),)
    events = Events()
    nc = await nats.connect(info["nats_url"])
    await nc.subscribe("ame.evt.run.*", cb=events.on_msg)
    channel = grpc.aio.insecure_channel(info["grpc_target"])
    stub = ame_service_pb2_grpc.AmeServiceStub(channel)

    # Warm-up: first connections, first prepared statements, first interpreter start.
    for _ in range(5):
        run_id, _ = await submit(stub, "warmup")
        await asyncio.wait_for(events.finished(run_id), 30)

    to_running, to_finished = [], []
    ACCEPTED.clear()
    for i in range(runs):
        run_id, sent = await submit(stub, f"seq-{i}")
        await asyncio.wait_for(events.finished(run_id), 30)
        seen = events.seen[run_id]
        to_running.append(seen["running"] - sent)
        to_finished.append(min(seen[s] for s in TERMINAL & set(seen)) - sent)
    print(f"sequential: {runs} runs of {COMMAND}")
    print(summary("submit accepted (the SubmitRun call)", list(ACCEPTED)))
    print(summary("submit -> running", to_running))
    print(summary("submit -> finished", to_finished))

    start = time.perf_counter()
    submitted = await asyncio.gather(*(submit(stub, f"burst-{i}") for i in range(burst)))
    accepted = time.perf_counter() - start
    ids = [run_id for run_id, _ in submitted]
    await asyncio.wait_for(asyncio.gather(*(events.finished(r) for r in ids)), 300)
    makespan = max(min(events.seen[r][s] for s in TERMINAL & set(events.seen[r])) for r in ids) - start
    print(
        f"burst: {burst} runs submitted at once: all accepted in {accepted * 1000:.0f} ms, "
        f"makespan {makespan:.2f} s ({burst / makespan:.1f} runs/s)"
    )

    conn = await asyncpg.connect(info["postgres_dsn"])
    try:
        # The registry and the archive follow the bus asynchronously; wait (bounded) until they have caught up.
        deadline = time.perf_counter() + 120
        while True:
            states = await conn.fetch("SELECT state, count(*) AS n FROM runs WHERE task LIKE 'burst-%' GROUP BY state")
            lines = await conn.fetch(
                "SELECT e.total_lines FROM log_ends e JOIN runs r ON r.id = e.run_id WHERE r.task LIKE 'burst-%'"
            )
            # A run's events are applied concurrently: its start time may land after its end.
            untimed = await conn.fetchval(
                "SELECT count(*) FROM runs WHERE task LIKE 'burst-%' AND (started_at IS NULL OR finished_at IS NULL)"
            )
            caught_up = (
                {r["state"]: r["n"] for r in states} == {"succeeded": burst} and len(lines) == burst and untimed == 0
            )
            if caught_up or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        print(f"registry and log archive complete {time.perf_counter() - start:.2f} s after the burst began")
        leases = await conn.fetch(
            "SELECT count(*) AS n FROM leases l JOIN runs r ON r.id = l.run_id WHERE r.task LIKE 'burst-%' "
            "GROUP BY l.run_id"
        )
    finally:
        await conn.close()
    by_state = {r["state"]: r["n"] for r in states}
    problems = []
    if by_state != {"succeeded": burst}:
        problems.append(f"registry states {by_state}")
    if len(leases) != burst or any(r["n"] != 1 for r in leases):
        problems.append(f"{len(leases)} runs leased, counts {sorted({r['n'] for r in leases})}")
    if untimed:
        problems.append(f"{untimed} runs without a start or end time")
    if len(lines) != burst or any(r["total_lines"] != 1 for r in lines):
        problems.append("log archive does not hold exactly one line for every run")
    verdict = "every run finished with its start and end times, none lost, none run twice"
    print("burst check: " + (verdict if not problems else "; ".join(problems)))
    await channel.close()
    await nc.close()
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ame-bench-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
        try:
            with embedded_server(Path(home), env, stop_timeout=60) as info:
                print(
                    f"machine: {os.cpu_count()} cores; embedded server (nats-server + PostgreSQL + 4 services, "
                    "1 process)"
                )
                return asyncio.run(measure(info, args.runs, args.burst))
        except ServerDidNotStart as exc:
            print(exc, file=sys.stderr)
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
