"""`retries: N` on the control plane: each retry is a new attempt of the same run, launched by the scheduler after a
backoff, with its own state, exit code, times and log. `ame task run NAME` follows every attempt and exits with the
last one's code; `ame runs get`, REST and gRPC show the attempts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import discover_token
from tests.integration.clients import Grpc, py
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def scheduler_overrides() -> dict[str, object]:
    # Short backoffs keep the tests quick; what they wait on is the run's state, never a sleep.
    return {"retry_backoff": 0.2, "retry_poll_interval": 0.05}


def _project(root: Path, marker: Path) -> Path:
    root.mkdir(parents=True)
    (root / "flaky.py").write_text(
        "import sys\n"
        "from pathlib import Path\n"
        f"marker = Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('tried')\n"
        "    print('first try fails', flush=True)\n"
        "    sys.exit(1)\n"
        "print('second try succeeds', flush=True)\n"
    )
    (root / "ame.yml").write_text(
        """\
project: retrying
tasks:
  - name: always_fails
    executor: !custom
      command: python -c 'import os, sys; print("failing in", os.environ["AME_RUN_ATTEMPT"], flush=True); sys.exit(3)'
    retries: 1
  - name: flaky
    executor: !custom
      command: python flaky.py
    retries: 2
  - name: too_slow
    executor: !custom
      command: python -c 'import time; print("started", flush=True); time.sleep(60)'
    timeout: 1s
    retries: 1
"""
    )
    return root


async def _ame(stack: Stack, home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in its own process, against the in-process stack."""
    env = {
        "AME_GRPC_TARGET": stack.grpc_target,
        "AME_HOME": str(home),
        "AME_TOKEN": discover_token() or "",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ame.cli.main",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def _only_run(client: Grpc, task: str) -> run_pb2.Run:
    (run,) = (await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="retrying", task=task))).runs
    return await client.get(run.id)


def _attempts(run: run_pb2.Run) -> list[tuple[int, int, int | None]]:
    return [(a.attempt, a.state, a.exit_code if a.HasField("exit_code") else None) for a in run.attempts]


async def test_a_failing_task_with_one_retry_runs_twice_and_ends_failed_with_both_attempts(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", tmp_path / "marker")
    home = tmp_path / "home"

    result = await _ame(stack, home, root, "task", "run", "always_fails")

    # Followed across both attempts, exiting with the last one's code.
    assert result.returncode == 3, result.stderr
    assert result.stdout == "failing in 1\nfailing in 2\n"
    assert "attempt 2 of 2" in result.stderr
    run = await _only_run(client, "always_fails")
    assert (run.state, run.attempt, run.exit_code) == (run_pb2.RUN_STATE_FAILED, 2, 3)
    assert _attempts(run) == [(1, run_pb2.RUN_STATE_FAILED, 3), (2, run_pb2.RUN_STATE_FAILED, 3)]
    first, second = run.attempts
    assert first.started_at.ToDatetime() <= first.finished_at.ToDatetime() <= second.started_at.ToDatetime()
    assert second.finished_at.ToDatetime() == run.finished_at.ToDatetime()
    assert first.launcher_id and second.launcher_id

    shown = await _ame(stack, home, root, "runs", "get", run.id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["ATTEMPT", "STATE", "EXIT"])
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[:3] for row in rows] == [["1", "failed", "3"], ["2", "failed", "3"]]
    as_json = json.loads((await _ame(stack, home, root, "runs", "get", run.id, "--json")).stdout)
    assert [(a["attempt"], a["state"], a["exit_code"]) for a in as_json["attempts"]] == [
        (1, "failed", 3),
        (2, "failed", 3),
    ]
    over_rest = (await rest.get(f"/v1/runs/{run.id}")).json()
    assert [(a["attempt"], a["state"]) for a in over_rest["attempts"]] == [(1, "failed"), (2, "failed")]
    assert over_rest["state"] == "failed" and over_rest["attempt"] == 2

    # Each attempt's output is its own: the archive keeps them apart, and a late follower sees the last one.
    followed = await client.follow(run.id)
    assert followed.texts[0] == "ame: attempt 2 of 2"
    assert [text for _, stream, text in followed.lines if stream == "stdout"] == ["failing in 2"]
    assert followed.end is not None and followed.end.end.exit_code == 3


async def test_a_task_that_fails_once_then_succeeds_ends_succeeded_on_its_second_attempt(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", tmp_path / "marker")

    result = await _ame(stack, tmp_path / "home", root, "task", "run", "flaky")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "first try fails\nsecond try succeeds\n"
    run = await _only_run(client, "flaky")
    assert (run.state, run.attempt, run.exit_code) == (run_pb2.RUN_STATE_SUCCEEDED, 2, 0)
    assert _attempts(run) == [(1, run_pb2.RUN_STATE_FAILED, 1), (2, run_pb2.RUN_STATE_SUCCEEDED, 0)]
    assert run.reason == ""


async def test_a_timed_out_attempt_is_retried_and_the_run_exits_124(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _project(tmp_path / "project", tmp_path / "marker")

    result = await _ame(stack, tmp_path / "home", root, "task", "run", "too_slow")

    assert result.returncode == 124, result.stderr
    assert result.stdout == "started\nstarted\n"
    run = await _only_run(client, "too_slow")
    assert run.state == run_pb2.RUN_STATE_TIMED_OUT
    assert [(a.attempt, a.state) for a in run.attempts] == [
        (1, run_pb2.RUN_STATE_TIMED_OUT),
        (2, run_pb2.RUN_STATE_TIMED_OUT),
    ]


@pytest.mark.parametrize("scheduler_overrides", [{"retry_backoff": 3.0, "retry_poll_interval": 0.05}])
async def test_cancelling_a_run_during_its_backoff_stops_its_retries(stack: Stack, client: Grpc) -> None:
    run = await client.submit(py("import sys; sys.exit(5)"), project="retrying", task="cancelled", retries=3)

    async def waiting_for_attempt_2() -> run_pb2.Run | None:
        current = await client.get(run.id)
        return current if current.attempt == 2 and current.state == run_pb2.RUN_STATE_QUEUED else None

    waiting = await wait_until(waiting_for_attempt_2, timeout=30, message="attempt 1 to fail and attempt 2 to wait")
    assert waiting.reason.startswith("retrying (attempt 2 of 4): attempt 1 failed with exit code 5")
    cancelled = (await client.stub.CancelRun(ame_service_pb2.CancelRunRequest(run_id=run.id, reason="enough"))).run
    assert cancelled.state == run_pb2.RUN_STATE_CANCELLED

    async def retry_dropped() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            state = await conn.fetchval("SELECT state FROM run_retries WHERE run_id = $1::uuid AND attempt = 2", run.id)
        return state == "cancelled"

    # Once its backoff is over the scheduler looks at the retry again, and drops it.
    await wait_until(retry_dropped, timeout=30, message="the scheduler to drop the cancelled retry")
    final = await client.get(run.id)
    assert (final.state, final.attempt, final.reason) == (run_pb2.RUN_STATE_CANCELLED, 2, "enough")
    assert _attempts(final) == [(1, run_pb2.RUN_STATE_FAILED, 5), (2, run_pb2.RUN_STATE_CANCELLED, None)]
    assert not final.attempts[1].HasField("started_at")
    async with stack.runtime.pool.acquire() as conn:
        leased = await conn.fetchval("SELECT count(*) FROM leases WHERE run_id = $1::uuid", run.id)
    assert leased == 1  # attempt 1's only: attempt 2 was never launched


async def test_a_run_lost_with_its_launcher_is_retried(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    release = tmp_path / "release"
    code = (
        "import os, pathlib, time\n"
        "print('attempt', os.environ['AME_RUN_ATTEMPT'], flush=True)\n"
        f"while os.environ['AME_RUN_ATTEMPT'] == '1' and not pathlib.Path({str(release)!r}).exists():\n"
        "    time.sleep(0.05)\n"
    )
    run = await client.submit(py(code), project="retrying", task="lost", retries=1)

    async def running() -> bool:
        return (await client.get(run.id)).state == run_pb2.RUN_STATE_RUNNING

    await wait_until(running, timeout=30, message="attempt 1 to run")

    async def process_recorded() -> bool:
        async with stack.runtime.pool.acquire() as conn:
            pgid = await conn.fetchval("SELECT pgid FROM leases WHERE run_id = $1::uuid AND attempt = 1", run.id)
        return pgid is not None

    await wait_until(process_recorded, timeout=30, message="the launcher to record attempt 1's process")
    # Its launcher vanishes (as far as leases tell): the lease stops being renewed and expires. Its process is
    # forgotten too, so the reconciler reports the attempt lost without ending it (the launcher that still runs it
    # would otherwise report it failed first); the attempt's late end changes nothing.
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            """UPDATE leases SET launcher_id = 'launcher-gone', expires_at = now() - interval '1 minute', pgid = NULL
               WHERE run_id = $1::uuid AND attempt = 1""",
            run.id,
        )

    async def ended() -> run_pb2.Run | None:
        current = await client.get(run.id)
        return current if current.state == run_pb2.RUN_STATE_SUCCEEDED else None

    final = await wait_until(ended, timeout=60, message="attempt 2 to run after attempt 1 was lost")
    assert [(a.attempt, a.state) for a in final.attempts] == [
        (1, run_pb2.RUN_STATE_LOST),
        (2, run_pb2.RUN_STATE_SUCCEEDED),
    ]
    assert "launcher-gone" in final.attempts[0].reason
    release.touch()

    async def attempt_1_process_ended() -> bool:
        return all(launcher.active_runs == 0 for launcher in stack.launchers)

    await wait_until(attempt_1_process_ended, timeout=30, message="attempt 1's process to end once released")
    assert [(a.attempt, a.state) for a in (await client.get(run.id)).attempts] == [
        (1, run_pb2.RUN_STATE_LOST),
        (2, run_pb2.RUN_STATE_SUCCEEDED),
    ]
