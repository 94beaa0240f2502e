"""Git project sources as a user gets them, with real git: a commit to a bare repository becomes a project version
(tagged with its short hash) whose new schedule fires on the shared simulated clock; a broken commit keeps that
version and says why; a signed push webhook syncs at once; a private repository served by `git http-backend`
syncs with a token from the secret store that shows up nowhere."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from ame_api.sources.settings import SourceSettings
from ame_platform.clock import ClockSettings
from tests.git_http import Repo, git_http_server
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
RATE = 600.0  # ten simulated minutes a real second: a `*/10 * * * *` slot each second, an hour in six
PROJECT_MAX_BYTES = 1_000_000  # small, so a test can commit more than a project may hold

AME_YML = """\
project: gitproj
tasks:
  - name: {task}
    executor: !custom
      command: echo {task}
    triggers:
      schedule: "*/10 * * * *"
"""
BROKEN_YML = """\
project: gitproj
tasks:
  - name: tick
    executor: !custom
      command: echo tick
    triggers:
      schedule: "every ten minutes"
"""


@pytest.fixture
def shared_clock() -> ClockSettings:
    return ClockSettings(start=START, anchor=datetime.now(UTC), rate=RATE)


@pytest.fixture
def scheduler_overrides(shared_clock: ClockSettings) -> dict[str, object]:
    return {"clock": shared_clock, "tick_interval": 0.05, "late_after": "5m", "relay_interval": 0.5}


@pytest.fixture
def api_overrides(shared_clock: ClockSettings, tmp_path: Path) -> dict[str, object]:
    sources = SourceSettings(cache_dir=tmp_path / "projectsrc", allow_local=True, poll=0.2, min_interval=1.0)
    return {"clock": shared_clock, "projectsrc": sources, "project_max_bytes": PROJECT_MAX_BYTES}


async def ame(stack: Stack, home: Path, *args: str) -> Result:
    env = {"AME_GRPC_TARGET": stack.grpc_target, "AME_HOME": str(home)}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


async def _source(rest: httpx.AsyncClient, source_id: str) -> dict[str, object]:
    listed = await rest.get("/v1/projectsrc")
    assert listed.status_code == 200, listed.text
    [found] = [s for s in listed.json()["sources"] if s["id"] == source_id]
    return dict(found)


async def _scheduled_runs(stack: Stack, task: str) -> int:
    async with stack.runtime.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM runs WHERE project = 'gitproj' AND task = $1 AND trigger = 'schedule'", task
            )
        )


async def _version(stack: Stack) -> tuple[str, str | None, int]:
    """The project's active version, its tag, and how many versions it has."""
    async with stack.runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT p.active_version_id, v.git_commit, (SELECT count(*) FROM project_versions
                                                          WHERE project_id = p.id) AS versions
               FROM projects p JOIN project_versions v ON v.project_id = p.id AND v.id = p.active_version_id
               WHERE p.name = 'gitproj'"""
        )
    assert row is not None, "gitproj has no active version"
    return str(row["active_version_id"]), row["git_commit"], int(row["versions"])


def _signed(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push", "Content-Type": "application/json"}


async def test_commits_become_versions_a_broken_one_keeps_the_last_and_a_push_hook_syncs(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    repo = Repo.create(tmp_path)
    first = repo.commit({"ame.yml": AME_YML.format(task="tick"), "tick.py": "print('tick')\n"}, "first")
    hook_key = secrets.token_hex(16)
    stored = await rest.put("/v1/secrets/HOOK_KEY", json={"value": hook_key})
    assert stored.status_code == 201, stored.text

    # Added without --branch: the remote's default branch (main) is tracked; add waits for the first sync.
    added = await ame(
        stack, tmp_path / "home", "projectsrc", "add", str(repo.origin), "--interval", "1h", "--hook-secret", "HOOK_KEY"
    )
    assert added.exit_code == 0, added.output
    source_id = added.output.strip().splitlines()[-1]
    assert f"Synchronized; commit {first[:7]}" in added.output, added.output
    source = await _source(rest, source_id)
    assert (source["branch"], source["synced_commit"], source["project"]) == ("main", first, "gitproj"), source
    version_a, tag, count = await _version(stack)
    assert (tag, count, source["version_id"]) == (first[:7], 1, version_a)
    # The version's schedule fires on the simulated clock (each real second is a slot).
    await wait_until(lambda: _scheduled_runs(stack, "tick"), timeout=30, message="a slot of the synced schedule")

    # A broken commit, picked up by the interval (an hour of simulated time): the version stays, Error says why.
    broken = repo.commit({"ame.yml": BROKEN_YML}, "broken")

    async def in_error() -> dict[str, object] | None:
        found = await _source(rest, source_id)
        return found if found["state"] == "Error" else None

    failed = await wait_until(in_error, timeout=40, message="the broken commit to be judged")
    reason = str(failed["reason"])
    assert f"commit {broken[:7]}" in reason and "ame.yml:7:17" in reason, reason
    assert failed["synced_commit"] == first and failed["version_id"] == version_a, failed
    assert (await _version(stack))[0] == version_a
    listed = await ame(stack, tmp_path / "home", "projectsrc", "list")
    assert listed.exit_code == 0 and "Error" in listed.output and "ame.yml:7:17" in listed.output, listed.output

    # A bad signature gets the webhooks' 401, and syncs nothing; a push webhook signed right syncs at once.
    fixed = repo.commit({"ame.yml": AME_YML.format(task="tock"), "tock.py": "print('tock')\n"}, "fixed")
    body = json.dumps({"ref": "refs/heads/main", "after": fixed}).encode()
    hook = f"/v1/source-hooks/default/{source_id}"
    bad = await rest.post(hook, content=body, headers=_signed("not-the-key", body))
    unknown = await rest.post("/v1/hooks/default/gitproj/nohook", content=body, headers=_signed(hook_key, body))
    assert bad.status_code == 401 and bad.json() == unknown.json(), (bad.text, unknown.text)
    other_branch = json.dumps({"ref": "refs/heads/feature"}).encode()
    ignored = await rest.post(hook, content=other_branch, headers=_signed(hook_key, other_branch))
    assert ignored.status_code == 202 and ignored.json()["sync"] is False, ignored.text
    pushed = await rest.post(hook, content=body, headers=_signed(hook_key, body))
    assert pushed.status_code == 202 and pushed.json() == {"source_id": source_id, "sync": True}, pushed.text

    async def synced_fixed() -> dict[str, object] | None:
        found = await _source(rest, source_id)
        return found if found["state"] == "Synchronized" and found["synced_commit"] == fixed else None

    # Well within the hour of simulated time (six real seconds) the interval would take.
    done = await wait_until(synced_fixed, timeout=5, message="the push webhook's sync")
    assert done["reason"] == ""
    version_c, tag, count = await _version(stack)
    assert version_c != version_a and (tag, count) == (fixed[:7], 2)
    await wait_until(lambda: _scheduled_runs(stack, "tock"), timeout=30, message="a slot of the new schedule")

    versions = await ame(stack, tmp_path / "home", "project", "versions", "--project", "gitproj")
    assert versions.exit_code == 0, versions.output
    assert [line.split()[-1] for line in versions.output.splitlines()[1:]] == [fixed[:7], first[:7]], versions.output

    # The same head again makes no new version.
    again = await ame(stack, tmp_path / "home", "projectsrc", "sync", source_id, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["synced_commit"] == fixed
    assert (await _version(stack))[2] == 2

    removed = await ame(stack, tmp_path / "home", "projectsrc", "remove", str(repo.origin))
    assert removed.exit_code == 0, removed.output
    assert (await rest.get("/v1/projectsrc")).json()["sources"] == []


async def test_a_private_http_repository_syncs_with_a_token_that_appears_nowhere(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    served = tmp_path / "served"
    served.mkdir()
    repo = Repo.create(served, "private.git")
    commit = repo.commit({"ame.yml": AME_YML.format(task="tick").replace("gitproj", "private")}, "first")
    token = "tok-" + secrets.token_hex(20)
    with git_http_server(served, password=token) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/private.git"
        # Without the token: Error, saying that authentication failed.
        anonymous = await rest.post("/v1/projectsrc", json={"url": url, "branch": "main"})
        assert anonymous.status_code == 201, anonymous.text
        refused = await rest.post(f"/v1/projectsrc/{anonymous.json()['id']}/sync")
        assert refused.status_code == 200 and refused.json()["state"] == "Error", refused.text
        assert "could not read Username" in refused.json()["reason"], refused.text
        assert (await rest.delete(f"/v1/projectsrc/{anonymous.json()['id']}")).status_code == 200

        # A wrong token: Error too, and the wrong value is nowhere in the answer either.
        wrong = "tok-" + secrets.token_hex(20)
        assert (await rest.put("/v1/secrets/WRONG", json={"value": wrong})).status_code == 201
        bad = await rest.post("/v1/projectsrc", json={"url": url, "path": "", "branch": "main", "secret": "WRONG"})
        assert bad.status_code == 201, bad.text
        bad_sync = (await rest.post(f"/v1/projectsrc/{bad.json()['id']}/sync")).json()
        assert bad_sync["state"] == "Error" and "Authentication failed" in bad_sync["reason"], bad_sync
        assert wrong not in json.dumps(bad_sync)
        assert (await rest.delete(f"/v1/projectsrc/{bad.json()['id']}")).status_code == 200

        assert (await rest.put("/v1/secrets/GIT_TOKEN", json={"value": token})).status_code == 201
        added = await rest.post("/v1/projectsrc", json={"url": url, "secret": "GIT_TOKEN", "interval": "1m"})
        assert added.status_code == 201, added.text
        synced = await rest.post(f"/v1/projectsrc/{added.json()['id']}/sync")
        assert synced.status_code == 200, synced.text
        body = synced.json()
        assert (body["state"], body["branch"], body["synced_commit"], body["project"]) == (
            "Synchronized",
            "main",
            commit,
            "private",
        ), body
        assert "x-access-token" in server.seen_users

    # The token is in no status, log line, table row or file the server keeps.
    listing = (await rest.get("/v1/projectsrc")).text
    assert token not in listing and wrong not in listing
    assert token not in caplog.text and wrong not in caplog.text
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT row_to_json(s)::text AS row FROM project_sources s")
    assert rows and all(token not in r["row"] and wrong not in r["row"] for r in rows)
    for path in (tmp_path / "projectsrc").rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert token.encode() not in data and wrong.encode() not in data, path


async def test_bad_input_is_a_clear_4xx(stack: Stack, rest: httpx.AsyncClient, tmp_path: Path) -> None:
    cases = [
        ({"url": "https://user:pw@example.org/x.git"}, "holds a password"),
        ({"url": "ftp://example.org/x.git"}, "must be https://"),
        ({"url": "--upload-pack=touch"}, "cannot start with '-'"),
        ({"url": "https://example.org/x.git", "branch": "-x"}, "not a branch name"),
        ({"url": "https://example.org/x.git", "path": "../up"}, "'..'"),
        ({"url": "https://example.org/x.git", "interval": "500ms"}, "at least 1s"),
        ({"url": "https://example.org/x.git", "interval": "soon"}, "duration"),
    ]
    for body, words in cases:
        answer = await rest.post("/v1/projectsrc", json=body)
        assert answer.status_code == 422 and words in answer.json()["error"], (body, answer.text)
        assert "pw" not in answer.text
    first = await rest.post("/v1/projectsrc", json={"url": "https://example.org/x.git", "branch": "main"})
    assert first.status_code == 201, first.text
    twice = await rest.post("/v1/projectsrc", json={"url": "https://example.org/x.git", "branch": "main"})
    assert twice.status_code == 409, twice.text
    missing = await rest.post("/v1/projectsrc/00000000-0000-0000-0000-000000000000/sync")
    assert missing.status_code == 404, missing.text


async def test_a_path_through_a_symbolic_link_is_refused(stack: Stack, rest: httpx.AsyncClient, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ame.yml").write_text(AME_YML.format(task="tick"))
    repo = Repo.create(tmp_path)
    (repo.work / "ml").symlink_to(outside)
    commit = repo.commit({"README.md": "a link to the server's disk\n"}, "link")
    added = await rest.post("/v1/projectsrc", json={"url": str(repo.origin), "path": "ml"})
    assert added.status_code == 201, added.text
    synced = (await rest.post(f"/v1/projectsrc/{added.json()['id']}/sync")).json()
    assert synced["state"] == "Error" and synced["reason"] == f"commit {commit[:7]}: ml is a symbolic link", synced
    async with stack.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM project_versions") == 0


async def test_a_commit_over_the_project_limit_is_refused_before_its_files_are_written(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A few kilobytes of pack can hold gigabytes of zeros: the sizes the commit records are checked first."""
    repo = Repo.create(tmp_path)
    commit = repo.commit({"ame.yml": AME_YML.format(task="tick"), "data.txt": "0" * (2 * PROJECT_MAX_BYTES)}, "big")
    added = await rest.post("/v1/projectsrc", json={"url": str(repo.origin), "branch": "main"})
    assert added.status_code == 201, added.text
    synced = (await rest.post(f"/v1/projectsrc/{added.json()['id']}/sync")).json()
    assert synced["state"] == "Error", synced
    assert synced["reason"].startswith(f"commit {commit[:7]}: the files in the commit are "), synced
    assert f"over the project limit of {PROJECT_MAX_BYTES} bytes" in synced["reason"], synced
    tree = tmp_path / "projectsrc" / added.json()["id"] / "tree"
    assert not (tree / "data.txt").exists() and not (tree / "ame.yml").exists()
    async with stack.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM project_versions") == 0


async def test_an_unexpected_failure_is_shown_and_retried_after_a_backoff(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path, shared_clock: ClockSettings
) -> None:
    repo = Repo.create(tmp_path)
    commit = repo.commit({"ame.yml": AME_YML.format(task="tick")}, "first")
    # The object store breaks: its directory is a file, so storing the project's blobs fails.
    objects = tmp_path / "objects"
    shutil.rmtree(objects, ignore_errors=True)
    objects.write_text("not a directory\n")
    added = await rest.post("/v1/projectsrc", json={"url": str(repo.origin), "branch": "main", "interval": "1h"})
    assert added.status_code == 201, added.text
    source_id = added.json()["id"]
    failed = (await rest.post(f"/v1/projectsrc/{source_id}/sync")).json()
    assert failed["state"] == "Error" and failed["reason"].startswith("internal error: "), failed
    # Not due again at the next look (a second), but after the backoff (the interval here): the simulated clock
    # runs 600 times real time, so a due time in its past would show at once.
    async with stack.runtime.pool.acquire() as conn:
        due = await conn.fetchval("SELECT next_sync_at FROM project_sources WHERE id = $1::uuid", source_id)
    assert shared_clock.anchor is not None
    clock_now = START + (datetime.now(UTC) - shared_clock.anchor) * RATE
    assert due > clock_now, (due, clock_now)

    # Once the store is back, a sync makes the version.
    objects.unlink()
    objects.mkdir()
    synced = (await rest.post(f"/v1/projectsrc/{source_id}/sync")).json()
    assert (synced["state"], synced["synced_commit"], synced["reason"]) == ("Synchronized", commit, ""), synced
