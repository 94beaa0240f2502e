"""A pushed project's tasks run on the in-process stack exactly as `-l` runs them: same output, same exit code.

The remote side is what `ame task run NAME` does (push, then submit the task's spec naming the version); the
local side is the runner `ame task run -l` calls, on the project directory itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.run_specs import run_spec_for_task
from ame.runner import LocalRunner, LocalSecretStore, RunSettings, vault_source_from_env
from ame.runner.home import AmeHome
from ame.runner.process import OutputSink, StreamName
from ame.spec import load_project, resolve_task
from ame.storage import LocalObjectStore
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

AME_YML = """\
project: remote
tasks:
  - name: read_file
    executor: !custom
      command: python read.py
    environment:
      - key: GREETING
        val: hello from the spec
  - name: with_dependency
    executor: !pip
      command: python -c 'import six, sys; print("six", six.__version__, sys.prefix != sys.base_prefix)'
  - name: too_slow
    executor: !custom
      command: python -c 'import time; print("started", flush=True); time.sleep(60)'
    timeout: 1s
  - name: fails
    executor: !custom
      command: python -c 'import sys; print("about to fail", flush=True); sys.exit(3)'
  - name: needs_secret
    executor: !custom
      command: echo should not run
    secrets:
      - !ame
        key: token
        injectAs: TOKEN
"""

READ_PY = """\
import os
from pathlib import Path

print(Path("data/input.txt").read_text().strip())
print(os.environ["GREETING"], os.environ["AME_TASK_NAME"], os.environ["AME_PROJECT"])
print("executable:", os.access("tools/run.sh", os.X_OK))
"""


def _project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "tools").mkdir()
    (root / "ame.yml").write_text(AME_YML)
    (root / "read.py").write_text(READ_PY)
    (root / "data" / "input.txt").write_text("the project's own data\n")
    (root / "tools" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "tools" / "run.sh", 0o755)
    (root / "requirements.txt").write_text("six==1.16.0\n")
    return root


class _Recording:
    def __init__(self) -> None:
        self.stdout: list[str] = []

    def sink(self, step: str | None) -> OutputSink:
        return self

    async def notice(self, text: str) -> None:
        pass

    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        if stream == "stdout":
            self.stdout.append(text)


async def _run_locally(root: Path, home: Path, task: str) -> tuple[list[str], int]:
    """What `ame task run -l TASK` runs (the CLI builds the same settings)."""
    ame_home = AmeHome(home)
    settings = RunSettings(
        home=ame_home,
        project_dir=root,
        project_name="remote",
        base_env=dict(os.environ),
        secrets=LocalSecretStore(ame_home.secrets_file),
        vault=vault_source_from_env,
        artifacts=LocalObjectStore(ame_home.artifacts),
        grace_seconds=2.0,
    )
    output = _Recording()
    result = await LocalRunner(settings).run(resolve_task(load_project(root), task), output)
    return output.stdout, result.exit_code


async def _run_remotely(stack: Stack, client: Grpc, root: Path, version: str, task: str) -> tuple[list[str], int, str]:
    spec = run_spec_for_task(resolve_task(load_project(root), task), project="remote", project_version_id=version)
    response = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    followed = await client.follow(response.run.id)
    assert followed.end is not None
    stdout = [text for _, stream, text in followed.lines if stream == "stdout"]
    system = [text for _, stream, text in followed.lines if stream != "stdout"]
    code = followed.end.end.exit_code
    # The log ends before the registry applies the final state: wait for it, then it must agree.
    deadline = time.monotonic() + 20
    run = await client.get(response.run.id)
    while run.state != followed.end.end.state:
        assert time.monotonic() < deadline, f"the run stayed {run_pb2.RunState.Name(run.state)}"
        await asyncio.sleep(0.05)
        run = await client.get(response.run.id)
    assert run.exit_code == code
    return stdout, code, f"{run_pb2.RunState.Name(followed.end.end.state)} {followed.end.end.reason} {system}"


async def _push(stack: Stack, root: Path, tmp_path: Path) -> str:
    return (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="remote")).version.id


async def test_custom_task_reads_its_project_files_remotely_as_locally(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "read_file")
    remote = await _run_remotely(stack, client, root, version, "read_file")
    assert local == (
        [
            "the project's own data",
            "hello from the spec read_file remote",
            "executable: True",
        ],
        0,
    )
    assert remote[:2] == local, remote[2]
    # A second run of the same version fetches nothing: every blob is in the launchers' content caches
    # (whichever launcher takes it) or is fetched once by a launcher that has not seen it yet.
    again = await _run_remotely(stack, client, root, version, "read_file")
    assert again[:2] == local


async def test_a_failing_command_exits_with_its_code_on_both_sides(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "fails")
    remote = await _run_remotely(stack, client, root, version, "fails")
    assert local == (["about to fail"], 3)
    assert remote[:2] == local, remote[2]
    assert remote[2].startswith("RUN_STATE_FAILED")


async def test_a_timeout_exits_124_on_both_sides(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "too_slow")
    remote = await _run_remotely(stack, client, root, version, "too_slow")
    assert local == (["started"], 124)
    assert remote[:2] == local, remote[2]
    assert remote[2].startswith("RUN_STATE_TIMED_OUT")


@pytest.mark.slow
async def test_pip_task_installs_a_real_dependency_remotely_as_locally(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    version = await _push(stack, root, tmp_path)
    local = await _run_locally(root, tmp_path / "home", "with_dependency")
    remote = await _run_remotely(stack, client, root, version, "with_dependency")
    assert local == (["six 1.16.0 True"], 0)
    assert remote[:2] == local, remote[2]


async def test_a_run_naming_an_unknown_version_is_refused(client: Grpc) -> None:
    spec = run_pb2.RunSpec(project="remote", task="read_file", command="true", project_version_id="a" * 64)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has no version" in (caught.value.details() or "")


async def test_a_blob_missing_from_the_store_fails_the_run_with_the_reason(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    (root / "data" / "input.txt").write_text("only in this test\n")
    version = await _push(stack, root, tmp_path)
    blobs = [p for p in (tmp_path / "objects").rglob("*") if p.is_file() and "/blobs/" in p.as_posix()]
    gone = next(p for p in blobs if p.read_bytes() == b"only in this test\n")
    gone.unlink()
    stdout, _, detail = await _run_remotely(stack, client, root, version, "read_file")
    assert stdout == []
    assert detail.startswith("RUN_STATE_FAILED")
    assert f"blob {gone.name} is not in the object store" in detail


async def test_a_task_needing_a_secret_fails_before_it_starts_saying_why(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    version = await _push(stack, root, tmp_path)
    stdout, _, detail = await _run_remotely(stack, client, root, version, "needs_secret")
    assert stdout == []
    assert detail.startswith("RUN_STATE_FAILED")
    assert "TOKEN: secret 'token' not found in AME's secret store (add it with `ame secret add`)" in detail
