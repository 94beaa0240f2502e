"""`ame create project` / `ame create task` (seed 003's getting started) and `ame run`: the file they write is
valid, keeps what the user wrote, and a mistake writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ame.cli import create_commands
from ame.cli.main import cli
from ame.spec import load_project


def _invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_project_and_its_tasks_written_by_options_are_valid_and_run(tmp_path: Path) -> None:
    root = tmp_path / "cr"
    code, out = _invoke("create", "project", "-p", str(root))
    assert code == 0, out
    assert load_project(root).name == "cr" and load_project(root).tasks == {}
    for args in (
        ("prep_one", "--executor", "custom", "--command", "echo 'a: b' > one.txt"),
        ("prep_two", "--executor", "custom", "--command", "echo two > two.txt"),
        ("train", "--executor", "custom", "--command", "cat one.txt two.txt", "--cpu", "500m", "--memory", "1Gi"),
        ("poetry_task", "--executor", "poetry", "--command", "python p.py", "--python-version", "3.12"),
        ("all", "--pipeline", "prep_one+prep_two, train"),
    ):
        code, out = _invoke("create", "task", *args, "-p", str(root))
        assert code == 0, out
    project = load_project(root)
    assert list(project.tasks) == ["prep_one", "prep_two", "train", "poetry_task", "all"]
    text = (root / "ame.yml").read_text()
    assert "      cpu: 500m\n      memory: 1Gi\n" in text
    assert "pythonVersion: '3.12'" in text
    assert "  - name: all\n    pipeline:\n      - - taskRef: prep_one\n        - taskRef: prep_two\n" in text
    # The pipeline runs as written: the group, then the step that reads what it wrote.
    code, out = _invoke("run", "-l", "all", "-p", str(root))
    assert code == 0, out
    assert "a: b" in out and "two" in out


def test_a_new_task_keeps_the_users_comments_and_the_old_dialect(tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_text(
        "#ame.yaml\n"
        "projectname: bestproject\n"
        "tasks:\n"
        "  download_data:\n"
        "    runcommand: python downloaddata.py # fetches\n"
        "\n"
        "# templates come next\n"
        "templates: []\n"
    )
    code, out = _invoke("create", "task", "train", "--executor", "custom", "--command", "echo t", "-p", str(tmp_path))
    assert code == 0, out
    assert (tmp_path / "ame.yml").read_text() == (
        "#ame.yaml\n"
        "projectname: bestproject\n"
        "tasks:\n"
        "  download_data:\n"
        "    runcommand: python downloaddata.py # fetches\n"
        "  train:\n"
        "    executor: !custom\n"
        "      command: echo t\n"
        "\n"
        "# templates come next\n"
        "templates: []\n"
    )
    assert list(load_project(tmp_path).tasks) == ["download_data", "train"]


def test_the_cli_asks_on_a_terminal_for_what_the_options_do_not_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(create_commands, "_interactive", lambda: True)
    code, out = _invoke("create", "project", "-p", str(tmp_path), input="asked\n")
    assert code == 0, out
    # name, single/pipeline, executor, command, cpu, memory, gpus
    code, out = _invoke("create", "task", "-p", str(tmp_path), input="train\nsingle\ncustom\necho hi\n2\n\n1\n")
    assert code == 0, out
    code, out = _invoke("create", "task", "-p", str(tmp_path), input="both\npipeline\ntrain\n")
    assert code == 0, out
    project = load_project(tmp_path)
    assert project.name == "asked" and list(project.tasks) == ["train", "both"]
    train = project.tasks["train"]
    assert train.resources is not None
    assert (train.resources.cpu_millis, train.resources.memory_bytes, train.resources.gpus) == (2000, None, 1)


def test_mistakes_write_nothing_and_say_what_is_wrong(tmp_path: Path) -> None:
    code, out = _invoke("create", "project", "-p", str(tmp_path))
    assert code == 0, out
    before = (tmp_path / "ame.yml").read_text()
    cases = [
        (("create", "project"), "exists already"),
        (("create", "task", "x"), "give --command (stdin is not a terminal to ask for it)"),
        (("create", "task", "p", "--pipeline", "nope"), "no task 'nope' in the project (its tasks: none yet)"),
        (("create", "task", "bad name"), "'bad name': a task name is letters"),
        (("create", "task", "m", "--command", "x", "--memory", "10 GB"), "write 10G (10 gigabytes) or 10Gi"),
        (("create", "task", "p2", "--pipeline", "a", "--command", "x"), "--pipeline names the steps"),
    ]
    for args, message in cases:
        code, out = _invoke(*args, "-p", str(tmp_path))
        assert code != 0 and message in out, (args, out)
        assert "Traceback" not in out
    assert (tmp_path / "ame.yml").read_text() == before
    code, out = _invoke("create", "task", "t", "--command", "echo", "-p", str(tmp_path))
    assert code == 0, out
    code, out = _invoke("create", "task", "t", "--command", "echo", "-p", str(tmp_path))
    assert code != 0 and "the project has a task 't' already" in out
