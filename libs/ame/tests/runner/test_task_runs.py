"""LocalRunner on plain tasks: environment, secrets, exit codes, timeouts, retries, artifacts, records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ame.runner.home import AmeHome
from ame.runner.secret_sources import LocalSecretStore, SecretError
from ame.runner.task_runs import LocalRunner

from .support import ProjectFactory, RecordingOutput, load_task, run_settings, wait_until


async def test_env_vars_ame_vars_and_masked_secrets(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: show
            executor: !custom
              command: 'echo "$FOO $AME_TASK_NAME $AME_PROJECT $AME_RUN_ID"; echo "token=$TOKEN" >&2'
            environment:
              - {key: FOO, val: bar}
            secrets:
              - !ame {key: tok, injectAs: TOKEN}
        """
    )
    LocalSecretStore(ame_home.secrets_file).add("tok", "hunter2-secret")
    output = RecordingOutput()
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "show"), output)
    assert result.state == "succeeded"
    assert result.exit_code == 0
    assert output.of(None) == [f"bar show demo {result.run_id}"]
    assert output.of(None, "stderr") == ["token=***"]


async def test_missing_secrets_fail_before_anything_starts(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: needs
            executor: !custom
              command: touch started
            secrets:
              - !ame {key: one, injectAs: ONE}
              - !ame {key: two, injectAs: TWO}
              - !vault {vault: corp, key: path/x, injectAs: THREE}
        """
    )
    with pytest.raises(SecretError) as raised:
        await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "needs"), RecordingOutput())
    message = str(raised.value)
    assert "ONE" in message
    assert "TWO" in message
    assert "not configured" in message
    assert not (project / "started").exists()


async def test_exit_code_is_the_tasks_and_a_record_is_written(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: bad
            executor: !custom
              command: exit 7
        """
    )
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "bad"), RecordingOutput())
    assert result.state == "failed"
    assert result.exit_code == 7
    record = json.loads((ame_home.runs / f"{result.run_id}.json").read_text())
    assert record["state"] == "failed"
    assert record["exit_code"] == 7


async def test_timeout_from_the_spec(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: slow
            timeout: 1s
            executor: !custom
              command: sleep 60
        """
    )
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "slow"), RecordingOutput())
    assert result.state == "timed_out"
    assert result.steps[0].reason == "timed out after 1 s"


async def test_cancel_event_stops_the_task(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: forever
            executor: !custom
              command: touch running; sleep 60
        """
    )
    cancel = asyncio.Event()
    runner = LocalRunner(run_settings(ame_home, project))
    running = asyncio.create_task(runner.run(load_task(project, "forever"), RecordingOutput(), cancel=cancel))
    await wait_until((project / "running").exists)
    cancel.set()
    result = await running
    assert result.state == "cancelled"
    assert result.exit_code == 130


async def test_retries_until_success(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: flaky
            retries: 2
            executor: !custom
              command: 'echo x >> attempts; [ $(wc -l < attempts) -ge 2 ]'
        """
    )
    output = RecordingOutput()
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "flaky"), output)
    assert result.state == "succeeded"
    assert result.steps[0].attempts == 2
    assert any("retrying (2/3)" in notice for notice in output.notices)


async def test_artifacts_paths_and_changed_files(ame_home: AmeHome, make_project: ProjectFactory) -> None:
    project = make_project(
        """
        tasks:
          - name: train
            executor: !custom
              command: >-
                mkdir -p out logs .venv-like && echo model > out/model.bin && echo log > logs/run.log
                && echo changed > existing.txt && echo junk > scratch.tmp
            artifacts:
              paths: [out]
              saveChangedFiles: true
        """,
        {"existing.txt": "old\n", "untouched.txt": "same\n", ".ameignore": "*.tmp\nlogs/\n"},
    )
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref")
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "train"), RecordingOutput())
    assert result.state == "succeeded"
    prefix = f"demo/train/{result.run_id}/"
    assert result.artifacts == [prefix + "existing.txt", prefix + "out/model.bin"]
    assert (ame_home.artifacts / prefix / "out" / "model.bin").read_text() == "model\n"


async def test_environment_dirs_inside_the_project_are_not_artifacts(
    ame_home: AmeHome, make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project(
        """
        tasks:
          - name: venv
            executor: !custom
              command: mkdir -p .venv/lib && touch .venv/pyvenv.cfg .venv/lib/x.py result.txt
            artifacts: {saveChangedFiles: true}
        """
    )
    result = await LocalRunner(run_settings(ame_home, project)).run(load_task(project, "venv"), RecordingOutput())
    assert [key.rsplit("/", 1)[1] for key in result.artifacts] == ["result.txt"]
