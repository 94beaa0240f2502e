"""The Tasks guide's commands against `ame server` as a user runs them: `ame task run`, `ame task list`,
`ame task logs`, each a separate `ame` process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import Server

pytestmark = [pytest.mark.e2e]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def test_task_list_and_logs_after_a_remote_run(ame_server: Server, tmp_path: Path) -> None:
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project)
    ame_server.start()

    before = ame_server.ame_in(project, "task", "list")
    assert before.returncode == 0, before.stderr
    assert "the server has no tasks" in before.stderr

    ran = ame_server.ame_in(project, "task", "run", "hello")
    assert ran.returncode == 0, ran.stderr
    listed = ame_server.ame_in(project, "task", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["Name", "Status", "Project", "Started", "Duration"]
    assert [row[0] for row in rows[1:]] == ["hello", "prepare_a", "prepare_b", "train", "pipeline"]
    assert rows[1][1:3] == ["succeeded", "hello"]
    assert rows[2][1:4] == ["never", "run", "hello"]

    logs = ame_server.ame_in(project, "task", "logs", "hello")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello from hello in the AME examples\n"
    unknown = ame_server.ame_in(project, "task", "logs", "nope")
    assert unknown.returncode == 2
    assert "no task or run matches 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert ame_server.stop() == 0
