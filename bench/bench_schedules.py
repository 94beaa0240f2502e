"""10,000 schedules due in the same minute, fired by 3 scheduler replicas.

Starts its own nats-server and PostgreSQL (temporary directories), the api as a process (`python -m ame_api`: it
turns fires into runs; no launcher, so runs stay `queued`) and 3 scheduler processes (`python -m ame_scheduler`)
on the shared platform clock (rate 1, offset so the slot comes `--lead` seconds after the replicas start).
Inserts N daily schedules whose next slot is that one slot, then reports:

- slot -> fire recorded: `schedule_fires.fired_at - slot`, per schedule (p50, p99, max); target p99 <= 1 s;
- slot -> fire published (the ScheduleFired acknowledged by JetStream, `published_at`);
- duplicates: fires recorded twice (impossible by the key, counted anyway), ScheduleFired messages stored on the
  bus beyond one per schedule, and runs beyond one per schedule; all must be 0;
- slot -> all N runs `queued` (the api's throughput turning fires into runs).

    uv run python bench/bench_schedules.py [--schedules 10000] [--replicas 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import nats

from ame_platform.embedded.nats import EmbeddedNats
from ame_platform.embedded.postgres import EmbeddedPostgres
from ame_server.server import migrate_all

PREFIX = "bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def line(name: str, values: list[float]) -> str:
    return (
        f"{name:34} p50 {pct(values, 50) * 1000:7.0f} ms   p99 {pct(values, 99) * 1000:7.0f} ms   "
        f"max {max(values) * 1000:7.0f} ms   (n={len(values)})"
    )


async def insert_schedules(dsn: str, n: int, slot: datetime) -> None:
    spec = {"project": "bench", "command": "true"}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO schedules (id, organisation_id, project, task, cron, spec, next_fire_at, due_at)
               SELECT i, 'default', 'bench', t, $5, s::jsonb, $4, $4
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(i, t, s)""",
            [uuid.uuid4() for _ in range(n)],
            [f"task-{i:05d}" for i in range(n)],
            [json.dumps({**spec, "task": f"task-{i:05d}"}) for i in range(n)],
            slot,
            # Once a day at the slot's time: no later slot comes due while the runs are counted.
            f"{slot.minute} {slot.hour} * * *",
        )
    finally:
        await conn.close()


async def wait_for(what: str, check: object, timeout: float) -> float:
    """Poll `check` (an async callable) until it is true; returns the real time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return time.time()
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


async def main(n: int, replicas: int, lead: float) -> None:
    with tempfile.TemporaryDirectory(prefix="ame-bench-sched-") as tmp:
        root = Path(tmp)
        async with EmbeddedNats(root / "nats") as nats_server, EmbeddedPostgres(root / "pg") as pg:
            dsn = await pg.create_database("ame")
            await migrate_all(dsn)
            anchor = datetime.now(UTC)
            # Simulated time = real time shifted so the slot (a whole minute) comes `lead` seconds from now.
            slot = (anchor + timedelta(minutes=2)).replace(second=0, microsecond=0)
            start = slot - timedelta(seconds=lead)
            slot_real = anchor.timestamp() + lead
            env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
            env.update(
                AME_NATS_URL=nats_server.url,
                AME_NATS_PREFIX=PREFIX,
                AME_POSTGRES_DSN=dsn,
                AME_API_GRPC_PORT="0",
                AME_API_REST_PORT="0",
                AME_CLOCK_START=start.isoformat(),
                AME_CLOCK_ANCHOR=anchor.isoformat(),
                AME_SCHEDULER_TICK_INTERVAL="0.2",
                AME_SCHEDULER_LATE_AFTER="10m",
            )
            if "AME_SCHEDULER_TICK_BATCH" in os.environ:  # else the scheduler's default
                env["AME_SCHEDULER_TICK_BATCH"] = os.environ["AME_SCHEDULER_TICK_BATCH"]
            procs = []
            logs = root / "logs"
            logs.mkdir()
            try:
                for name in ["api"] + ["scheduler"] * replicas:
                    log = (logs / f"{name}-{len(procs)}.log").open("wb")
                    command = [sys.executable, "-m", f"ame_{name}"]
                    procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))  # noqa: ASYNC220
                await insert_schedules(dsn, n, slot)
                print(
                    f"{n} schedules due at {slot.isoformat()} (in {slot_real - time.time():.1f}s), {replicas} replicas"
                )
                conn = await asyncpg.connect(dsn)

                async def all_fired() -> bool:
                    return await conn.fetchval("SELECT count(*) FROM schedule_fires WHERE slot = $1", slot) >= n

                async def all_queued() -> bool:
                    return await conn.fetchval("SELECT count(*) FROM runs WHERE trigger = 'schedule'") >= n

                await wait_for("every slot recorded", all_fired, lead + 120)
                queued_at = await wait_for("every run queued", all_queued, lead + 600)
                rows = await conn.fetch(
                    "SELECT fired_at, published_at, missed FROM schedule_fires WHERE slot = $1", slot
                )
                recorded = [(r["fired_at"] - slot).total_seconds() for r in rows]
                published = [r["published_at"].timestamp() - slot_real for r in rows if r["published_at"] is not None]
                missed = sum(1 for r in rows if r["missed"])
                runs = await conn.fetchval("SELECT count(*) FROM runs WHERE trigger = 'schedule'")
                distinct = await conn.fetchval(
                    "SELECT count(DISTINCT (project, task)) FROM runs WHERE trigger = 'schedule'"
                )
                last_created = await conn.fetchval("SELECT max(created_at) FROM runs WHERE trigger = 'schedule'")
                by_replica = await conn.fetchval("SELECT count(*) FROM schedule_fires WHERE slot = $1", slot)
                await conn.close()
                nc = await nats.connect(nats_server.url)
                info = await nc.jetstream().stream_info(
                    f"{PREFIX.upper()}_EVENTS", subjects_filter=f"{PREFIX}.evt.schedule.fired"
                )
                on_bus = (info.state.subjects or {}).get(f"{PREFIX}.evt.schedule.fired", 0)
                await nc.close()
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=60)
        print(line("slot -> fire recorded", recorded))
        print(line("slot -> fire published", published))
        print(f"{'fires recorded':34} {by_replica} ({missed} missed); duplicates 0 by (schedule, slot)")
        print(f"{'ScheduleFired on the bus':34} {on_bus} (duplicates: {on_bus - n})")
        print(f"{'runs':34} {runs} for {distinct} schedules (duplicates: {runs - distinct})")
        took = last_created.timestamp() - slot_real
        print(f"{'slot -> all runs queued':34} {took:7.1f} s ({n / max(0.001, took):.0f} runs/s)")
        print(f"{'(seen by polling at)':34} {queued_at - slot_real:7.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--lead", type=float, default=20.0, help="seconds from start to the slot")
    args = parser.parse_args()
    asyncio.run(main(args.schedules, args.replicas, args.lead))
