"""`triggers: {webhook: {secret: KEY}}`: read into the resolved task, positioned errors for bad input."""

from __future__ import annotations

from ame.spec import load_project_text, resolve_task

from .conftest import only_problem

TASK = "tasks:\n  - name: t\n    executor: !custom\n      command: x\n    triggers:\n"


def test_a_webhook_names_its_secret() -> None:
    project = load_project_text(TASK + "      webhook:\n        secret: github/push-key\n")
    task = resolve_task(project, "t")
    assert task.webhook_secret == "github/push-key"
    assert task.schedule is None


def test_a_webhook_beside_a_schedule() -> None:
    project = load_project_text(TASK + "      schedule: '0 * * * *'\n      webhook: {secret: KEY}\n")
    task = resolve_task(project, "t")
    assert (task.schedule, task.webhook_secret) == ("0 * * * *", "KEY")


def test_a_bad_secret_name_is_positioned() -> None:
    problem = only_problem(TASK + "      webhook:\n        secret: 'no spaces!'\n")
    assert (problem.line, problem.column) == (7, 17)
    assert "'no spaces!' is not a secret name" in problem.message


def test_a_missing_secret_and_a_misspelt_key_are_positioned() -> None:
    problem = only_problem(TASK + "      webhook: {}\n")
    assert (problem.line, problem.column) == (6, 16)
    assert "missing required field 'secret'" in problem.message


def test_a_webhook_that_is_not_a_mapping() -> None:
    problem = only_problem(TASK + "      webhook: KEY\n")
    assert problem.line == 6
    assert "webhook" in problem.message
