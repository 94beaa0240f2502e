"""One sync of a git source at a time across api replicas: the row's lease, on a real PostgreSQL.

Each replica claims through its own connection, as separate api processes do; a replica that dies mid-sync
(it never renews nor finishes) leaves a lease that expires, after which another replica takes the source, and
the dead one's late outcome is refused (fenced by the lease number).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ame_api.repositories import sources as repo
from ame_server.server import migrate_all
from tests.git_http import Repo
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(pg_dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Eight connections: eight api replicas' claims."""
    await migrate_all(pg_dsn)
    conns = [await asyncpg.connect(pg_dsn) for _ in range(8)]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.close()


async def _add(conn: asyncpg.Connection) -> repo.SourceRow:
    return await repo.add(
        conn,
        organisation="default",
        url="https://git.invalid/r.git",
        branch="main",
        path="",
        interval_seconds=60.0,
        secret_name="",
        hook_secret_name="",
        now=NOW,
    )


async def test_one_replica_claims_a_due_source_and_a_dead_ones_lease_is_taken_over(
    replicas: list[asyncpg.Connection],
) -> None:
    source = await _add(replicas[0])
    lease = timedelta(seconds=1)

    # Eight replicas look at once: exactly one gets the source.
    claims = await asyncio.gather(
        *(repo.claim(conn, owner=f"replica-{i}", now=NOW, lease=lease) for i, conn in enumerate(replicas))
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].id == source.id, claims
    first = won[0]
    assert first.syncing

    # While its lease holds, nobody else takes it, even asked to sync it now.
    assert await repo.request_sync(replicas[1], organisation="default", source_id=source.id) == 2
    assert await repo.claim(replicas[1], owner="replica-1", now=NOW, lease=lease, source_id=source.id) is None

    # The first replica dies (no renewal, no outcome): once its lease expires, another replica takes the sync.
    async def taken_over() -> repo.SourceRow | None:
        return await repo.claim(replicas[2], owner="replica-2", now=NOW, lease=timedelta(seconds=30))

    second = await wait_until(taken_over, timeout=10, interval=0.1, message="the expired lease to be taken")
    assert second.id == source.id and second.lease_seq == first.lease_seq + 1 and second.requested == 2

    # The dead replica's late outcome and renewal are refused; the live one's outcome is recorded.
    later = NOW + timedelta(minutes=1)
    assert not await repo.renew(replicas[0], source_id=source.id, lease_seq=first.lease_seq, lease=lease)
    assert not await repo.finish(replicas[0], claimed=first, state="Error", reason="stale", next_sync_at=later)
    assert await repo.finish(
        replicas[2],
        claimed=second,
        state="Synchronized",
        reason="",
        next_sync_at=later,
        checked=("a" * 40, "Synchronized", ""),
        synced=("a" * 40, NOW, "proj", "b" * 64),
    )
    row = await repo.get(replicas[3], organisation="default", source_id=source.id)
    assert row is not None
    assert (row.state, row.reason, row.synced_commit, row.served, row.syncing) == (
        "Synchronized",
        "",
        "a" * 40,
        2,
        False,
    )
    # Served and not due until its next interval.
    assert await repo.claim(replicas[4], owner="replica-4", now=NOW, lease=lease) is None
    assert await repo.claim(replicas[4], owner="replica-4", now=later, lease=lease) is not None


async def test_a_sync_asked_for_during_a_sync_runs_again_after_it(replicas: list[asyncpg.Connection]) -> None:
    source = await _add(replicas[0])
    running = await repo.claim(replicas[0], owner="a", now=NOW, lease=timedelta(seconds=30))
    assert running is not None and running.requested == 1
    # A push arrives while the fetch runs: that sync may have fetched before the push.
    assert await repo.request_sync(replicas[1], organisation="default", source_id=source.id) == 2
    later = NOW + timedelta(hours=1)
    assert await repo.finish(replicas[0], claimed=running, state="Synchronized", reason="", next_sync_at=later)
    again = await repo.claim(replicas[1], owner="b", now=NOW, lease=timedelta(seconds=30))
    assert again is not None and again.id == source.id and again.requested == 2 and again.served == 1


@pytest.mark.nats
@pytest.mark.slow
async def test_a_replica_killed_mid_sync_leaves_the_sync_to_another(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path
) -> None:
    """Two api processes: the first claims the source and hangs in `git fetch`; SIGKILLed there, its lease
    expires and the second replica syncs the commit."""
    await migrate_all(pg_dsn)
    repo_dir = Repo.create(tmp_path)
    commit = repo_dir.commit(
        {"ame.yml": "project: crash\ntasks:\n  - name: t\n    executor: !custom\n      command: 'true'\n"}
    )
    # A `git` that hangs in fetch (and says which process hangs), first on the first replica's PATH.
    hanging = tmp_path / "hanging-git"
    hanging.mkdir()
    pids = tmp_path / "hung-pids"
    wrapper = hanging / "git"
    wrapper.write_text(
        f'#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = fetch ]; then echo $$ >> {pids}; exec sleep 120; fi\ndone\n'
        f'exec {shutil.which("git")} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_") or k in ("AME_TOKEN",)}
    env.update(
        AME_NATS_URL=nats_url,
        AME_NATS_PREFIX=bus_prefix,
        AME_POSTGRES_DSN=pg_dsn,
        AME_API_REST_PORT="0",
        AME_API_GRPC_PORT="0",
        AME_PROJECTSRC_ALLOW_LOCAL="true",
        AME_PROJECTSRC_POLL="0.2",
        AME_PROJECTSRC_LEASE="2s",
        AME_LIFECYCLE_GRACEFUL_TIMEOUT="2s",
    )
    conn = await asyncpg.connect(pg_dsn)
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, path: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        extra = {"PATH": path, "AME_PROJECTSRC_CACHE_DIR": str(tmp_path / f"cache-{name}")}
        proc = subprocess.Popen([sys.executable, "-m", "ame_api"], env={**env, **extra}, stdout=log, stderr=log)
        started.append(proc)
        return proc

    try:
        source = await repo.add(
            conn,
            organisation="default",
            url=str(repo_dir.origin),
            branch="main",
            path="",
            interval_seconds=3600.0,
            secret_name="",
            hook_secret_name="",
            now=NOW,
        )
        first = spawn("first", f"{hanging}:{os.environ['PATH']}")

        async def hung() -> bool:
            owner = await conn.fetchval("SELECT lease_owner FROM project_sources WHERE id = $1", uuid.UUID(source.id))
            return pids.exists() and f":{first.pid}:" in owner

        await wait_until(hung, timeout=60, interval=0.1, message="the first replica to claim and hang in git fetch")
        first.send_signal(signal.SIGKILL)
        first.wait()
        spawn("second", os.environ["PATH"])

        async def synced() -> repo.SourceRow | None:
            row = await repo.get(conn, organisation="default", source_id=source.id)
            return row if row is not None and row.state == "Synchronized" else None

        row = await wait_until(synced, timeout=90, interval=0.2, message="the second replica to sync the source")
        assert (row.synced_commit, row.project, row.served) == (commit, "crash", 1)
        assert row.lease_seq == 2, "claimed once by the killed replica, once by the one that synced"
        assert await conn.fetchval("SELECT count(*) FROM project_versions") == 1
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if pids.exists():
            for pid in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        await conn.close()


async def test_a_stale_replica_cannot_activate_once_its_lease_was_taken_over(
    replicas: list[asyncpg.Connection],
) -> None:
    """Activation runs in a transaction that first locks the row under the claim's lease (`repo.hold`): a replica
    that stalled past its lease finds it gone and activates nothing, and while a holder activates, nobody can take
    the source over."""
    source = await _add(replicas[0])
    stale = await repo.claim(replicas[0], owner="a", now=NOW, lease=timedelta(seconds=1))
    assert stale is not None

    # The holder activates under its lease: the row is locked, so even once the lease expires nobody takes it.
    async with replicas[0].transaction():
        assert await repo.hold(replicas[0], claimed=stale)

        async def expired() -> bool:
            return bool(
                await replicas[2].fetchval(
                    "SELECT lease_until < clock_timestamp() FROM project_sources WHERE id = $1", uuid.UUID(source.id)
                )
            )

        await wait_until(expired, timeout=10, interval=0.1, message="the lease to expire")
        assert await repo.claim(replicas[1], owner="b", now=NOW, lease=timedelta(seconds=30)) is None

    # It stalls past its lease; another replica takes the source over, and then the stale one may not activate.
    async def taken_over() -> repo.SourceRow | None:
        return await repo.claim(replicas[1], owner="b", now=NOW, lease=timedelta(seconds=30))

    fresh = await wait_until(taken_over, timeout=10, interval=0.1, message="the expired lease to be taken")
    assert fresh.id == source.id and fresh.lease_seq == stale.lease_seq + 1
    async with replicas[0].transaction():
        assert not await repo.hold(replicas[0], claimed=stale)
    async with replicas[1].transaction():
        assert await repo.hold(replicas[1], claimed=fresh)
