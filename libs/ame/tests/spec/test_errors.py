"""Mistakes people make, and the positioned, actionable problems they get back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ame.spec import Limits, SpecError, find_project_file, load_project, load_project_text

from .conftest import only_problem, problems_of

POETRY = "    executor:\n      !poetry\n      pythonVersion: '3.11'\n      command: python train.py\n"


def test_misspelt_executor_tag_suggests_the_right_one() -> None:
    problem = only_problem("tasks:\n  - name: t\n    executor: !poetyr\n      command: x\n")
    assert (problem.line, problem.column) == (3, 15)
    assert "unknown executor '!poetyr'; did you mean '!poetry'?" in problem.message


def test_executor_tags_ignore_case() -> None:
    project = load_project_text("tasks:\n  - name: t\n    executor: !PipEnv\n      command: x\n")
    assert project.tasks["t"].executor is not None
    assert project.tasks["t"].executor.kind == "pipenv"


def test_fractional_gpu() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    resources:\n      nvidia.com/gpu: 0.5\n")
    assert (problem.line, problem.column) == (8, 23)
    assert problem.message.startswith("tasks.t.resources.nvidia.com/gpu: '0.5' is not a whole number")


def test_memory_with_a_space_and_an_si_unit() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    resources:\n      memory: 10 GB\n")
    assert (problem.line, problem.column) == (8, 15)
    assert "write 10G (10 gigabytes) or 10Gi (10 gibibytes)" in problem.message


def test_unknown_field_gets_a_suggestion_at_the_key() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    resorces:\n      cpu: 1\n")
    assert (problem.line, problem.column) == (7, 5)
    assert "unknown field 'resorces'; did you mean 'resources'?" in problem.message


@pytest.mark.parametrize(
    ("field", "expected"),
    [("gpu: 1", "did you mean 'nvidia.com/gpu'?"), ("ram: 1G", "did you mean 'memory'?")],
)
def test_resource_keys_people_reach_for(field: str, expected: str) -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + f"    resources:\n      {field}\n")
    assert expected in problem.message


def test_executor_fields_written_on_the_task() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    image: myimage\n")
    assert "goes inside the executor" in problem.message


def test_unknown_task_reference() -> None:
    problem = only_problem("tasks:\n  - name: a\n    taskRef: trian\n  - name: train\n" + POETRY)
    assert (problem.line, problem.column) == (3, 14)
    assert "unknown task 'trian'; did you mean 'train'?" in problem.message


def test_unknown_reference_from_a_model() -> None:
    problem = only_problem("models:\n  - name: m\n    training:\n      task:\n        taskRef: nope\n")
    assert (problem.line, problem.column) == (5, 18)
    assert "unknown task 'nope'" in problem.message


def test_template_cycle() -> None:
    text = (
        "templates:\n  - name: a\n    fromTemplate: b\n  - name: b\n    fromTemplate: a\n"
        "tasks:\n  - name: t\n    fromTemplate: a\n" + POETRY
    )
    problems = problems_of(text)
    assert any("template cycle: a -> b -> a" in problem.message for problem in problems)


def test_pipeline_cycle() -> None:
    text = "tasks:\n  - name: a\n    pipeline:\n      - taskRef: b\n  - name: b\n    pipeline:\n      - taskRef: a\n"
    problems = problems_of(text)
    assert {problem.message for problem in problems} >= {"reference cycle: a -> b -> a", "reference cycle: b -> a -> b"}
    assert {(problem.line, problem.column) for problem in problems} == {(4, 18), (7, 18)}


def test_task_referencing_itself() -> None:
    problem = only_problem("tasks:\n  - name: a\n    taskRef: a\n")
    assert problem.message == "reference cycle: a -> a"


def test_duplicate_task_name() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "  - name: t\n" + POETRY)
    assert (problem.line, problem.column) == (7, 11)
    assert "duplicate task name 't' (first defined at line 2, column 5)" in problem.message


def test_duplicate_key_in_a_mapping() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    retries: 1\n    retries: 2\n")
    assert (problem.line, problem.column) == (8, 5)


def test_task_without_executor() -> None:
    problem = only_problem("tasks:\n  - name: t\n    retries: 1\n")
    assert (problem.line, problem.column) == (2, 5)
    assert "task 't' has no executor" in problem.message


def test_all_problems_are_reported_at_once() -> None:
    text = (
        "tasks:\n  - name: a\n    taskRef: missing\n  - name: b\n" + POETRY + "    resources:\n      memory: 1 GB\n"
        "  - name: c\n    executor: !nope\n      command: x\n  - name: d\n    timeout: soon\n" + POETRY
    )
    lines = sorted(problem.line or 0 for problem in problems_of(text))
    assert lines == [3, 10, 12, 15]


def test_poetry_needs_a_python_version() -> None:
    problem = only_problem("tasks:\n  - name: t\n    executor: !poetry\n      command: x\n")
    assert "needs pythonVersion" in problem.message


def test_bad_cron_schedule() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    triggers:\n      schedule: 0 25 * * *\n")
    assert (problem.line, problem.column) == (8, 17)
    assert "not a valid cron schedule" in problem.message


def test_cron_with_the_wrong_number_of_fields() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    triggers:\n      schedule: 0 12 * *\n")
    assert "needs 5 fields" in problem.message


@pytest.mark.parametrize(("value", "expected"), [("5 minutes", "invalid duration"), ("0", "longer than zero")])
def test_bad_timeout(value: str, expected: str) -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + f"    timeout: {value}\n")
    assert expected in problem.message


def test_negative_retries() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    retries: -1\n")
    assert "out of range" in problem.message


def test_taskref_cannot_be_mixed_with_an_executor() -> None:
    problem = only_problem("tasks:\n  - name: a\n    taskRef: b\n" + POETRY + "  - name: b\n" + POETRY)
    assert "cannot also set executor" in problem.message


def test_the_same_step_twice_in_a_pipeline_needs_its_own_name() -> None:
    text = "tasks:\n  - name: p\n    pipeline:\n      - taskRef: t\n      - taskRef: t\n  - name: t\n" + POETRY
    problem = only_problem(text)
    assert (problem.line, problem.column) == (5, 9)
    assert "runs 't' twice" in problem.message


def test_reference_to_another_projects_task_is_not_supported_yet() -> None:
    problem = only_problem("tasks:\n  - name: a\n    taskRef: {name: b, project: other}\n")
    assert "not supported yet" in problem.message


def test_unknown_local_data_set() -> None:
    text = "dataSets:\n  - name: mnist\n    path: data\ntasks:\n  - name: t\n" + POETRY + "    dataSets: [mnst]\n"
    problem = only_problem(text)
    assert "unknown data set 'mnst'; did you mean 'mnist'?" in problem.message


def test_a_list_where_a_mapping_is_expected() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    resources: [1, 2]\n")
    assert "expected a mapping" in problem.message


def test_several_documents_are_refused() -> None:
    problem = only_problem("tasks: []\n---\ntasks: []\n")
    assert (problem.line, problem.column) == (2, 1)
    assert "single YAML document" in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_files_that_are_not_a_project(text: str) -> None:
    problem = only_problem(text)
    assert problem.line == 1


def test_artifact_paths_stay_in_the_project() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    artifacts:\n      paths: [../secrets]\n")
    assert "relative to the project directory" in problem.message


# -- hostile input -------------------------------------------------------------------------


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.perf_counter()
    problem = only_problem("\n".join(lines) + "\n")
    assert time.perf_counter() - started < 2
    assert "expands to more than" in problem.message


def test_large_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "ame.yml"
    with big.open("w") as stream:
        stream.write("tasks:\n")
        stream.write("# padding\n" * (1024 * 1024))  # ~10 MiB
    started = time.perf_counter()
    with pytest.raises(SpecError, match="larger than the 4096 KiB limit"):
        load_project(tmp_path)
    assert time.perf_counter() - started < 1


def test_too_many_nodes_are_refused() -> None:
    with pytest.raises(SpecError, match="expands to more than 100"):
        load_project_text("x: [" + ", ".join(["1"] * 200) + "]\n", limits=Limits(max_nodes=100))


def test_deep_nesting_is_refused() -> None:
    problem = only_problem("a: " + "[" * 200 + "]" * 200 + "\n")
    assert "nested more than" in problem.message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_bytes(b"tasks:\n  - name: \xff\n")
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (2, 11)


# -- finding the file ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ame.yml", "ame.yaml"])
def test_both_file_names_are_found(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("tasks: []\n")
    assert find_project_file(tmp_path) == tmp_path / name


def test_no_project_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no ame\.yml or ame\.yaml"):
        find_project_file(tmp_path)


def test_two_project_files_are_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "ame.yml").write_text("tasks: []\n")
    (tmp_path / "ame.yaml").write_text("tasks: []\n")
    with pytest.raises(SpecError, match="keep one of them"):
        find_project_file(tmp_path)


def test_spec_error_lists_problems_as_file_line_column() -> None:
    with pytest.raises(SpecError) as caught:
        load_project_text("tasks:\n  - name: t\n    retries: 1\n", filename="demo/ame.yml")
    assert str(caught.value).startswith("demo/ame.yml:2:5: task 't' has no executor")


def test_a_queue_key_points_at_loop_and_a_bad_loop_name_is_refused() -> None:
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    queue: metadata\n")
    assert "unknown field 'queue'; did you mean 'loop'?" in problem.message
    problem = only_problem("tasks:\n  - name: t\n" + POETRY + "    loop: meta data\n")
    assert "'meta data' is not a valid name" in problem.message
