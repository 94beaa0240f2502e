"""A canary secret through `ame server`: added with the CLI, printed by a remote run, and found nowhere but in the
run's environment. Not in the archived logs (masked there), the API's responses, any message on the bus (a
subscriber to every subject), the PostgreSQL tables (a plain-text dump) or the server's files and log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest

from ame.sdk.credentials import bearer
from ame_platform.embedded.postgres import postgres_bin_dir
from tests.e2e.test_ame_server import AME, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

AME_YML = """\
project: canary
tasks:
  - name: show
    executor: !custom
      command: python show.py
    secrets:
      - !ame
        key: canary-token
        injectAs: TOKEN
  - name: needs_missing
    executor: !custom
      command: python show.py
    secrets:
      - !ame
        key: never-added
        injectAs: TOKEN
"""

SHOW_PY = """\
import hashlib, os
value = os.environ["TOKEN"]
print("token:", value, flush=True)
print("sha256:", hashlib.sha256(value.encode()).hexdigest(), flush=True)
"""


def _ame(server: Server, cwd: Path | None, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AME, *args], capture_output=True, text=True, env=server.env, timeout=120, cwd=cwd, input=stdin
    )


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                found.append(str(path))
    return found


@pytest.fixture
def home() -> Iterator[Path]:
    # Not under pytest's tmp_path: PostgreSQL runs as an unprivileged user when tests run as root, and pytest
    # re-tightens its base directory whenever another session starts (see tests/infra_fixtures.py).
    path = Path(tempfile.mkdtemp(prefix="ame-canary-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_canary_secret_appears_only_masked(home: Path, tmp_path: Path) -> None:
    server = Server(home / "home")
    server.home.mkdir()
    canary = f"CANARY-{secrets.token_hex(12)}"
    needles = [canary.encode(), canary.encode().hex().encode(), canary.encode("utf-16-le")]
    nc: nats.NATS | None = None
    try:
        info = await asyncio.to_thread(server.start)
        bus: list[bytes] = []

        async def record(msg: nats.aio.msg.Msg) -> None:
            bus.append(msg.subject.encode() + b" " + json.dumps(msg.headers or {}).encode() + b" " + msg.data)

        nc = await nats.connect(info["nats_url"])
        await nc.subscribe(">", cb=record)
        await nc.flush()

        project = tmp_path / "project"
        project.mkdir()
        (project / "ame.yml").write_text(AME_YML)
        (project / "show.py").write_text(SHOW_PY)

        # Pushing before the secret exists warns, naming it (and the task's missing one).
        pushed = await asyncio.to_thread(_ame, server, project, "project", "push")
        assert pushed.returncode == 0, pushed.stderr
        assert "the server has no secret canary-token, never-added" in pushed.stderr

        added = await asyncio.to_thread(_ame, server, None, "secret", "add", "canary-token", stdin=canary + "\n")
        assert added.returncode == 0, added.stderr
        listed = await asyncio.to_thread(_ame, server, None, "secret", "list")
        assert listed.stdout.split() == ["canary-token"]

        run = await asyncio.to_thread(_ame, server, project, "task", "run", "show")
        assert run.returncode == 0, run.stderr
        assert "token: ***" in run.stdout.splitlines()
        assert f"sha256: {hashlib.sha256(canary.encode()).hexdigest()}" in run.stdout.splitlines()
        assert "the server has no secret never-added (" in run.stderr  # canary-token exists now

        missing = await asyncio.to_thread(_ame, server, project, "task", "run", "needs_missing")
        assert missing.returncode != 0
        assert "never-added" in missing.stderr and "token:" not in missing.stdout

        async with httpx.AsyncClient(base_url=info["rest_url"], timeout=30, headers=bearer(server.token)) as rest:
            # The CLI returns at the log's end; the registry applies the final state a moment later.
            deadline = time.monotonic() + 30
            while True:
                runs = (await rest.get("/v1/runs")).json()["runs"]
                show = next(r for r in runs if r["spec"]["task"] == "show")
                failed = next(r for r in runs if r["spec"]["task"] == "needs_missing")
                if show["state"] == "succeeded" and failed["state"] not in ("queued", "launching", "running"):
                    break
                assert time.monotonic() < deadline, (show["state"], failed["state"])
                await asyncio.sleep(0.1)
            assert failed["state"] == "failed" and "never-added" in failed["reason"]
            assert failed["started_at"] is None, "a run missing a secret must fail before it starts"
            responses = [
                await rest.get("/v1/runs"),
                await rest.get(f"/v1/runs/{show['id']}"),
                await rest.get(f"/v1/runs/{show['id']}/logs"),
                await rest.get("/v1/secrets"),
                await rest.get("/v1/tasks"),
            ]
        assert all(r.status_code == 200 for r in responses)
        assert "***" in responses[2].text
        for response in responses:
            assert not any(n in response.content for n in needles), response.request.url

        # The archive (the logs service's tables) holds the masked line once the run's end is archived.
        conn = await asyncpg.connect(info["postgres_dsn"])
        try:
            deadline = time.monotonic() + 30
            while not await conn.fetchval("SELECT count(*) FROM log_ends WHERE run_id = $1::uuid", show["id"]):
                assert time.monotonic() < deadline, "the run's log was not archived"
                await asyncio.sleep(0.1)
            chunks = await conn.fetch("SELECT payload FROM log_chunks WHERE run_id = $1::uuid", show["id"])
        finally:
            await conn.close()
        archived = b"".join(bytes(c["payload"]) for c in chunks)
        assert b"token: ***" in archived
        assert canary.encode() not in archived

        await nc.flush()
        await nc.close()
        nc = None
        assert any(b"token: ***" in m for m in bus), "the subscriber saw no log message of the run"
        assert not [m[:200] for m in bus if any(n in m for n in needles)]

        dump = subprocess.run(
            [str(postgres_bin_dir() / "pg_dump"), "--data-only", "--dbname", info["postgres_dsn"]],
            capture_output=True,
            timeout=120,
        )
        assert dump.returncode == 0, dump.stderr
        assert b"canary-token" in dump.stdout  # the secret's row is there, by name
        assert not any(n in dump.stdout for n in needles)

        removed = await asyncio.to_thread(_ame, server, None, "secret", "rm", "canary-token")
        assert removed.returncode == 0, removed.stderr
        assert (await asyncio.to_thread(_ame, server, None, "secret", "list")).stdout == ""
        again = await asyncio.to_thread(_ame, server, None, "secret", "rm", "canary-token")
        assert again.returncode == 1 and "secret 'canary-token' not found" in again.stderr
    finally:
        if nc is not None:
            await nc.close()
        if server.proc is not None and server.proc.poll() is None:
            assert await asyncio.to_thread(server.stop) == 0
    # After a clean stop: the server's log and every file it keeps (NATS's stream files among them).
    assert server.log.read_text(), "the server wrote no log at all"
    assert _files_holding(server.home, needles) == []
