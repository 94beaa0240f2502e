"""`ame validate` and `ame task view`, run through click's test runner."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ame.cli import spec_commands

from .conftest import FIXTURES


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def root() -> None:
        pass

    @root.group()
    def task() -> None:
        pass

    spec_commands.register(root)
    return root


def test_validate_reports_every_problem_and_exits_non_zero(cli: click.Group, tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_text(
        "tasks:\n  - name: a\n    taskRef: b\n  - name: c\n    executor: !poetyr\n      command: x\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].endswith("ame.yml:3:14: taskRef: unknown task 'b' (known: a, c)")
    assert "ame.yml:5:15: unknown executor '!poetyr'" in lines[1]
    assert lines[-1] == "2 problems found"


def test_validate_a_valid_project(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["validate", str(FIXTURES / "seed_001" / "21_pipeline_inline.yml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("valid (2 tasks, 0 templates)\n")


def test_validate_notes_unchecked_templates_and_checks_them_on_request(cli: click.Group) -> None:
    main = FIXTURES / "cross_project" / "main"
    result = CliRunner().invoke(cli, ["validate", str(main)])
    assert result.exit_code == 0
    assert "template 'xgboost_resources' of project 'shared_templates' was not checked" in result.stderr
    checked = CliRunner().invoke(
        cli, ["validate", str(main), "--with-project", str(FIXTURES / "cross_project" / "shared_templates")]
    )
    assert checked.exit_code == 0
    assert checked.stderr == ""


def test_view_prints_the_resolved_task(cli: click.Group) -> None:
    result = CliRunner().invoke(
        cli, ["task", "view", "train_my_model", "-f", str(FIXTURES / "seed_001" / "12_template_same_project.yml")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:4] == [
        "name: train_my_model",
        "executor: !poetry",
        "  pythonVersion: '3.11'",
        "  command: python train.py",
    ]
    assert "nvidia.com/gpu: '1'" in result.stdout


def test_view_of_an_unknown_task_suggests_one(cli: click.Group) -> None:
    result = CliRunner().invoke(
        cli, ["task", "view", "train_my_modle", "-f", str(FIXTURES / "seed_001" / "00_minimal.yml")]
    )
    assert result.exit_code == 1
    assert "no task named 'train_my_modle'; did you mean 'train_my_model'?" in result.stderr


def test_validate_without_a_project_file(cli: click.Group, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no ame.yml or ame.yaml" in result.stderr
