"""`ame project push` and a remote `ame task run` against the in-process stack, as a user runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from ame.cli.main import cli
from tests.integration.project_support import make_project
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def ame(stack: Stack, home: Path, *args: str) -> Result:
    """Run the CLI off the event loop (its gRPC client blocks; the stack serves on this loop)."""
    env = {"AME_GRPC_TARGET": stack.grpc_target, "AME_HOME": str(home)}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


def figures(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    value: dict[str, object] = json.loads(result.stdout)
    return value


async def test_push_twice_uploads_nothing_and_a_one_line_change_uploads_one_file(stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "demo", files=8)
    (root / ".ameignore").write_text("big.bin\n")
    (root / "big.bin").write_bytes(b"\0" * 1_000_000)
    home = tmp_path / "home"
    first = figures(await ame(stack, home, "project", "push", str(root), "--json"))
    assert first["uploaded_files"] == first["total_files"] == 11  # ame.yml, hello.py, .ameignore, 8 modules
    assert first["total_bytes"] == first["uploaded_bytes"]
    assert first["total_bytes"] < 1_000_000  # the ignored file was not packed

    second = figures(await ame(stack, home, "project", "push", str(root), "--json"))
    assert (second["uploaded_files"], second["uploaded_bytes"]) == (0, 0)
    assert second["version"] == first["version"]

    with (root / "src" / "m2.py").open("a") as f:
        f.write("ONE_MORE_LINE = True\n")
    third = figures(await ame(stack, home, "project", "push", str(root), "--json"))
    assert third["uploaded_files"] == 1
    assert third["uploaded_bytes"] == (root / "src" / "m2.py").stat().st_size
    version_id = third["version"]["id"]  # type: ignore[index]
    assert version_id != first["version"]["id"]  # type: ignore[index]

    plain = await ame(stack, home, "project", "push", str(root))
    assert plain.exit_code == 0
    assert plain.stdout.strip() == version_id
    assert "uploaded 0 files" in plain.stderr

    listed = await ame(stack, home, "project", "versions", "--project", "demo", "--json")
    assert [v["id"] for v in json.loads(listed.stdout)] == [version_id, first["version"]["id"]]  # type: ignore[index]


async def test_push_with_an_invalid_ame_yml_fails_with_its_problems(stack: Stack, tmp_path: Path) -> None:
    root = make_project(tmp_path / "demo")
    (root / "ame.yml").write_text("project: demo\ntasks:\n  - name: hello\n    executor: !custom\n      comand: x\n")
    result = await ame(stack, tmp_path / "home", "project", "push", str(root))
    assert result.exit_code == 1
    assert "ame.yml:5:7: tasks.hello.executor.comand: unknown field 'comand'" in result.stderr


async def test_remote_task_run_pushes_first_and_names_the_version(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "demo")
    home = tmp_path / "home"
    result = await ame(stack, home, "task", "run", "hello", "-p", str(root), "--no-follow")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip().splitlines()[-1]
    run = (await rest.get(f"/v1/runs/{run_id}")).json()
    versions = (await rest.get("/v1/projects/demo/versions")).json()["versions"]
    assert [v["id"] for v in versions] == [run["spec"]["project_version_id"]]
    assert "uploaded 7 files" in result.stderr
