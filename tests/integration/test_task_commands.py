"""`ame task list` and `ame task logs` against the in-process stack, as a user runs them, and the queries under them
(ListTasks, ListRuns by id prefix) over gRPC and REST."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.sdk.credentials import discover_token
from tests.integration.clients import Grpc, py
from tests.integration.project_support import sdk_push
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def write_project(root: Path, name: str, tasks: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  - name: {t}\n    executor: !custom\n      command: echo {t}\n" for t in tasks)
    (root / "ame.yml").write_text(f"project: {name}\ntasks:\n{body}")
    return root


async def push(stack: Stack, root: Path, project: str, tmp_path: Path) -> str:
    result = await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project)
    return result.version.id


async def ame(stack: Stack, home: Path, *args: str) -> Result:
    """Run the CLI off the event loop (its gRPC client blocks; the stack serves on this loop)."""
    env = {"AME_GRPC_TARGET": stack.grpc_target, "AME_HOME": str(home)}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


async def finished_run(client: Grpc, command: str, project: str, task: str) -> run_pb2.Run:
    run = await client.submit(command, project=project, task=task)

    async def ended() -> run_pb2.Run | None:
        current = await client.get(run.id)
        return current if current.state not in _ACTIVE else None

    return await wait_until(ended, timeout=30, message=f"run of {project}/{task} to end")


_ACTIVE = {run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_LAUNCHING, run_pb2.RUN_STATE_RUNNING}


async def test_task_list_shows_every_projects_latest_tasks_with_their_last_run(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    alpha = write_project(tmp_path / "alpha", "alpha", ["prepare", "train"])
    beta = write_project(tmp_path / "beta", "beta", ["train", "report"])
    first_alpha = await push(stack, alpha, "alpha", tmp_path)
    await push(stack, beta, "beta", tmp_path)
    done = await finished_run(client, py("print('trained')"), "alpha", "train")
    assert done.state == run_pb2.RUN_STATE_SUCCEEDED

    home = tmp_path / "home"
    listed = await ame(stack, home, "task", "list", "--json")
    assert listed.exit_code == 0, listed.output
    tasks = json.loads(listed.stdout)
    assert [(t["project"], t["name"]) for t in tasks] == [
        ("alpha", "prepare"),
        ("alpha", "train"),
        ("beta", "train"),
        ("beta", "report"),
    ]
    by_name = {(t["project"], t["name"]): t for t in tasks}
    trained = by_name["alpha", "train"]["last_run"]
    assert trained["id"] == done.id
    assert trained["state"] == "succeeded"
    assert trained["started_at"] is not None
    assert trained["finished_at"] is not None
    assert by_name["beta", "train"]["last_run"] is None  # same task name, other project: never ran
    assert {t["project_version_id"] for t in tasks if t["project"] == "alpha"} == {first_alpha}

    table = await ame(stack, home, "task", "list")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["Name", "Status", "Project", "Started", "Duration"]
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    assert ("train", "succeeded", "alpha") in rows
    assert ("train", "never", "run") in rows  # "never run" in the Status column
    assert len(lines) == 5

    only_beta = await ame(stack, home, "task", "list", "--project", "beta", "--json")
    assert [(t["project"], t["name"]) for t in json.loads(only_beta.stdout)] == [("beta", "train"), ("beta", "report")]
    nothing = await ame(stack, home, "task", "list", "--project", "gamma")
    assert nothing.exit_code == 0
    assert nothing.stdout == ""
    assert "project 'gamma' has no tasks" in nothing.stderr

    # A new push replaces the project's tasks; pushing the first version again makes it the latest again.
    (alpha / "ame.yml").write_text((alpha / "ame.yml").read_text().replace("prepare", "evaluate"))
    second_alpha = await push(stack, alpha, "alpha", tmp_path)
    assert second_alpha != first_alpha
    response = await rest.get("/v1/tasks", params={"project": "alpha"})
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["tasks"]] == ["evaluate", "train"]
    assert response.json()["tasks"][1]["last_run"]["id"] == done.id  # runs are matched by project and task name
    (alpha / "ame.yml").write_text((alpha / "ame.yml").read_text().replace("evaluate", "prepare"))
    assert await push(stack, alpha, "alpha", tmp_path) == first_alpha
    grpc_listed = await client.stub.ListTasks(ame_service_pb2.ListTasksRequest(project="alpha"))
    assert [t.name for t in grpc_listed.tasks] == ["prepare", "train"]
    assert grpc_listed.tasks[1].last_run.id == done.id
    assert not grpc_listed.tasks[0].HasField("last_run")


async def test_task_listing_pages_and_refuses_bad_queries(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    await push(stack, write_project(tmp_path / "a", "a", ["one", "two"]), "a", tmp_path)
    await push(stack, write_project(tmp_path / "b", "b", ["three"]), "b", tmp_path)
    seen: list[tuple[str, str]] = []
    token = ""
    for _ in range(5):
        page = await client.stub.ListTasks(ame_service_pb2.ListTasksRequest(page_size=1, page_token=token))
        seen.extend((t.project, t.name) for t in page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert seen == [("a", "one"), ("a", "two"), ("b", "three")]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.ListTasks(ame_service_pb2.ListTasksRequest(organisation="elsewhere"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.ListTasks(ame_service_pb2.ListTasksRequest(page_token="not a token"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(id_prefix="01a"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 4 hex digits" in (caught.value.details() or "")
    for params in ({"page_size": "0"}, {"project": "../x"}, {"page_token": "a/0"}):
        response = await rest.get("/v1/tasks", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]
    response = await rest.get("/v1/runs", params={"id_prefix": "zzzz"})
    assert response.status_code == 422
    assert "hex" in response.json()["error"]


async def test_task_logs_prefers_the_current_directorys_project(
    stack: Stack, client: Grpc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = write_project(tmp_path / "alpha", "alpha", ["train"])
    beta = write_project(tmp_path / "beta", "beta", ["train"])
    await push(stack, alpha, "alpha", tmp_path)
    await push(stack, beta, "beta", tmp_path)
    await finished_run(client, py("print('alpha trained')"), "alpha", "train")
    await finished_run(client, py("import sys; print('beta trained'); sys.exit(3)"), "beta", "train")
    home = tmp_path / "home"

    monkeypatch.chdir(alpha)
    here = await ame(stack, home, "task", "logs", "train")
    assert here.exit_code == 0, here.output
    assert here.stdout == "alpha trained\n"
    other = await ame(stack, home, "task", "logs", "train", "--project", "beta")
    assert other.exit_code == 3  # the run's exit code
    assert other.stdout == "beta trained\n"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    latest = await ame(stack, home, "task", "logs", "train")
    assert latest.exit_code == 3
    assert latest.stdout == "beta trained\n"  # no project here: the newest run of any project's `train`
    assert "beta/train" in latest.stderr


async def test_task_logs_by_run_id_prefix_and_what_matches_nothing(
    stack: Stack, client: Grpc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await push(stack, write_project(tmp_path / "demo", "demo", ["hello", "idle"]), "demo", tmp_path)
    first = await finished_run(client, py("print('first run')"), "demo", "hello")
    second = await finished_run(client, py("print('second run')"), "demo", "hello")
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)

    by_id = await ame(stack, home, "task", "logs", first.id)
    assert (by_id.exit_code, by_id.stdout) == (0, "first run\n")
    assert (await ame(stack, home, "task", "logs", "hello")).stdout == "second run\n"  # the task's latest
    assert (await ame(stack, home, "task", "logs")).stdout == "second run\n"  # no argument, no project: the latest
    monkeypatch.chdir(write_project(tmp_path / "fresh", "fresh", ["hello"]))
    none_here = await ame(stack, home, "task", "logs")
    assert none_here.exit_code == 2
    assert "project 'fresh' has no runs yet" in none_here.stderr
    monkeypatch.chdir(tmp_path)

    # Two runs made moments apart share their first digits (a UUIDv7 starts with its time); the rest differ.
    shared = next(i for i, (a, b) in enumerate(zip(first.id, second.id, strict=True)) if a != b)
    assert shared >= 4
    unique = second.id[: shared + 1]
    by_prefix = await ame(stack, home, "task", "logs", unique)
    assert (by_prefix.exit_code, by_prefix.stdout) == (0, "second run\n")

    ambiguous = await ame(stack, home, "task", "logs", first.id[:4])
    assert ambiguous.exit_code == 2
    assert "matches 2 runs" in ambiguous.stderr
    assert first.id in ambiguous.stderr
    assert second.id in ambiguous.stderr
    assert ambiguous.stdout == ""

    unknown = await ame(stack, home, "task", "logs", "no-such-task")
    assert unknown.exit_code == 2
    assert "no task or run matches 'no-such-task'" in unknown.stderr
    never = await ame(stack, home, "task", "logs", "idle")
    assert never.exit_code == 2
    assert "task 'idle' (project demo) has not run yet" in never.stderr
    gone = await ame(stack, home, "task", "logs", "0" * 8 + first.id[8:])
    assert gone.exit_code == 2
    assert "no run" in gone.stderr


async def test_task_logs_follows_a_running_task_until_it_ends(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    release = tmp_path / "release"
    code = (
        "import pathlib, sys, time\n"
        "print('started', flush=True)\n"
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)\n"
        "print('released'); sys.exit(4)"
    )
    run = await client.submit(py(code), project="demo", task="slow")
    env = {
        "AME_GRPC_TARGET": stack.grpc_target,
        "AME_HOME": str(tmp_path / "home"),
        "AME_CONFIG_DIR": str(tmp_path / "config"),
        "AME_TOKEN": discover_token() or "",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ame.cli.main",
        "task",
        "logs",
        "slow",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert first == b"started\n"
        assert proc.returncode is None  # still following: the run waits for the release file
        assert (await client.get(run.id)).state == run_pb2.RUN_STATE_RUNNING
        release.touch()
        rest_of_output, errors = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rest_of_output == b"released\n"
    assert proc.returncode == 4, errors.decode()
    assert f"run {run.id}: demo/slow (" in errors.decode()


async def _start_remote_task_run(stack: Stack, tmp_path: Path, release: Path) -> asyncio.subprocess.Process:
    """`ame task run wait` (on the server) in a project whose task prints, then waits for `release`."""
    root = tmp_path / "waiting"
    root.mkdir()
    (root / "wait.py").write_text(
        "import pathlib, time\n"
        "print('started', flush=True)\n"
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)\n"
        "print('released')\n"
    )
    (root / "ame.yml").write_text(
        "project: waiting\ntasks:\n  - name: wait\n    executor: !custom\n      command: python wait.py\n"
    )
    env = {
        "AME_GRPC_TARGET": stack.grpc_target,
        "AME_HOME": str(tmp_path / "home"),
        "AME_CONFIG_DIR": str(tmp_path / "config"),
        "AME_TOKEN": discover_token() or "",
        "PYTHONUNBUFFERED": "1",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ame.cli.main",
        "task",
        "run",
        "wait",
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), timeout=60)
        assert line, f"stream ended before {needle!r}: {seen.decode()}"
        seen += line
    return seen


async def _the_run(client: Grpc) -> run_pb2.Run:
    (run,) = (await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="waiting"))).runs
    return run


async def test_ctrl_c_detaches_from_a_remote_run_which_goes_on(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    release = tmp_path / "release"
    proc = await _start_remote_task_run(stack, tmp_path, release)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert await asyncio.wait_for(proc.stdout.readline(), timeout=60) == b"started\n"
        proc.send_signal(signal.SIGINT)
        detached = await _read_until(proc.stderr, b"detached from run")
        assert b"ame task logs" in detached
        _, rest = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, rest.decode()
    run = await _the_run(client)
    assert run.state == run_pb2.RUN_STATE_RUNNING  # the run went on without its follower
    release.touch()
    followed = await asyncio.wait_for(client.follow(run.id), timeout=60)
    assert [text for _, stream, text in followed.lines if stream == "stdout"] == ["started", "released"]
    assert followed.end is not None and followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED


async def test_a_second_ctrl_c_cancels_the_remote_run(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    proc = await _start_remote_task_run(stack, tmp_path, tmp_path / "never")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert await asyncio.wait_for(proc.stdout.readline(), timeout=60) == b"started\n"
        proc.send_signal(signal.SIGINT)
        await _read_until(proc.stderr, b"Ctrl-C again")
        proc.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, rest.decode()
    run = await _the_run(client)

    async def cancelled() -> bool:
        return (await client.get(run.id)).state == run_pb2.RUN_STATE_CANCELLED

    await wait_until(cancelled, timeout=30, message="the run to be cancelled")
    assert "Ctrl-C" in (await client.get(run.id)).reason


async def test_detach_starts_the_run_and_returns_its_id(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = write_project(tmp_path / "detached", "detached", ["hello"])
    result = await ame(stack, tmp_path / "home", "task", "run", "hello", "--detach", "--project-dir", str(root))
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    followed = await asyncio.wait_for(client.follow(run_id), timeout=60)
    assert followed.end is not None and followed.end.end.state == run_pb2.RUN_STATE_SUCCEEDED
    assert [text for _, stream, text in followed.lines if stream == "stdout"] == ["hello"]
    refused = await ame(stack, tmp_path / "home", "task", "run", "-l", "hello", "--detach", "--project-dir", str(root))
    assert refused.exit_code == 2 and "--detach is for runs on the server" in refused.output
