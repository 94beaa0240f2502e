"""Every YAML example users have read (seeds 000, 001 and 003) is a fixture here.

Valid examples must load to the model the docs describe; broken ones must fail with the
line and column of the mistake and a message that says how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ame.spec import (
    AmeSecret,
    SpecError,
    VaultSecret,
    load_project,
    load_project_text,
    resolve_task,
    templates_from,
)

from .conftest import FIXTURES

SEED = FIXTURES / "seed_001"


def load(name: str, directory: Path = SEED):  # type: ignore[no-untyped-def]
    return load_project(directory / name)


def test_minimal_task_has_a_name_and_an_executor() -> None:
    project = load("00_minimal.yml")
    task = resolve_task(project, "train_my_model")
    assert project.name is None
    assert task.executor is not None
    assert (task.executor.kind, task.executor.python_version, task.executor.command) == (
        "poetry",
        "3.11",
        "python train.py",
    )
    assert task.pipeline == []
    assert task.retries == 0


def test_resources_are_normalised_to_base_units() -> None:
    task = resolve_task(load("01_resources.yml"), "train_my_model")
    assert task.resources.cpu_millis == 4000
    assert task.resources.memory_bytes == 10**10
    assert task.resources.storage_bytes == 30 * 10**9
    assert task.resources.gpus == 1
    assert task.resources.to_kubernetes() == {
        "requests": {"cpu": "4", "memory": "10G", "ephemeral-storage": "30G", "nvidia.com/gpu": "1"},
        "limits": {"memory": "10G", "ephemeral-storage": "30G", "nvidia.com/gpu": "1"},
    }


def test_ame_and_vault_secrets_are_told_apart_by_their_tags() -> None:
    task = resolve_task(load("02_secrets.yml"), "train_my_model")
    assert task.secrets == [
        AmeSecret(key="blob_storage_key", inject_as="MY_BLOB_STORAGE_SECRET"),
        VaultSecret(vault="company_vault", key="path/to/secret", inject_as="COMPANY_SECRET"),
    ]


@pytest.mark.parametrize(
    ("file", "kind", "python", "command"),
    [
        ("03_executor_poetry.yml", "poetry", "3.11", "python train.py"),
        ("04_executor_pip.yml", "pip", "3.11", "python train.py"),
        ("05_executor_pipenv.yml", "pipenv", None, "python train.py"),
        ("06_executor_mlflow.yml", "mlflow", "3.11", "python train.py"),
        ("07_executor_custom.yml", "custom", "3.11", "python train.py"),
    ],
)
def test_every_documented_executor(file: str, kind: str, python: str | None, command: str) -> None:
    executor = resolve_task(load(file), "train_my_model").executor
    assert executor is not None
    assert (executor.kind, executor.python_version, executor.command) == (kind, python, command)


@pytest.mark.parametrize(
    ("file", "kind", "image"),
    [
        ("08_fragment_poetry.yml", "poetry", None),
        ("09_fragment_pipenv.yml", "pipenv", None),
        ("10_fragment_pip.yml", "pip", None),
        ("11_fragment_custom_image.yml", "pip", "myimage"),  # the docs show !pip under "Custom executor"
    ],
)
def test_executor_fragments_work_inside_a_task(file: str, kind: str, image: str | None) -> None:
    fragment = (SEED / file).read_text()
    project = load_project_text("tasks:\n  - name: t\n" + fragment)
    executor = resolve_task(project, "t").executor
    assert executor is not None
    assert (executor.kind, executor.image) == (kind, image)


def test_an_executor_fragment_on_its_own_says_where_it_belongs() -> None:
    with pytest.raises(SpecError) as caught:
        load("08_fragment_poetry.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (1, 5)
    assert "belongs to a task" in problem.message


def test_template_in_the_same_project_supplies_resources_and_secrets() -> None:
    task = resolve_task(load("12_template_same_project.yml"), "train_my_model")
    assert task.resources.gpus == 1
    assert task.resources.memory_bytes == 10**10
    assert [secret.inject_as for secret in task.secrets] == ["MY_BLOB_STORAGE_SECRET", "COMPANY_SECRET"]
    assert task.executor is not None
    assert task.executor.kind == "poetry"


def test_both_projects_of_the_cross_project_example_pasted_in_one_file_is_a_duplicate_key() -> None:
    with pytest.raises(SpecError) as caught:
        load("13_template_other_project_combined.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (14, 1)
    assert "duplicate key 'project' (first given at line 2" in problem.message


def test_template_from_another_project() -> None:
    main = FIXTURES / "cross_project" / "main"
    external = templates_from([FIXTURES / "cross_project" / "shared_templates"])
    project = load_project(main, external_templates=external)
    assert project.name == "xgboost_project"
    task = resolve_task(project, "train_my_model", external_templates=external)
    assert task.resources.cpu_millis == 4000
    assert len(task.secrets) == 2
    with pytest.raises(SpecError, match="comes from project 'shared_templates'"):
        resolve_task(project, "train_my_model")


def test_artifact_examples() -> None:
    paths = resolve_task(load("14_artifacts_paths.yml"), "artifact_task")
    assert paths.artifacts.paths == ["path/to/artifact_dir"]
    assert paths.artifacts.save_changed_files is False
    assert paths.executor is not None
    assert paths.executor.kind == "pipenv"
    changed = resolve_task(load("15_artifacts_save_changed.yml"), "artifact_task")
    assert changed.artifacts.save_changed_files is True


def test_data_set_reference_to_another_project() -> None:
    project = load("16_artifacts_dataset.yml")
    assert project.name == "artifact_example"  # `name:` at the top level is the project name
    task = resolve_task(project, "artifact_task")
    assert [(ref.project, ref.name) for ref in task.data_sets] == [("anotherproject", "somedataset")]


def test_model_training_by_task_reference() -> None:
    project = load("17_taskref_model_training.yml")
    training = project.models[0].training
    assert training is not None
    assert training.task.task_ref is not None
    assert training.task.task_ref.name == "train_my_model"
    template = project.tasks["train_my_model"].from_template
    assert template is not None
    assert (template.project, template.name) == ("shared_templates", "xgboost_resources")


def test_inline_model_training_task() -> None:
    project = load("18_inline_model_training.yml")
    training = project.models[0].training
    assert training is not None
    assert training.task.name == "train_my_model"
    assert project.tasks == {}


def test_task_referencing_a_task_is_resolved_under_its_own_name() -> None:
    project = load("19_taskref_from_task.yml")
    task = resolve_task(project, "other_task", external_templates=lambda project, name: _EMPTY_TEMPLATE)
    assert task.name == "other_task"
    assert task.executor is not None
    assert task.executor.command == "python train.py"


def test_the_docs_placeholder_cron_is_reported_as_an_alias() -> None:
    with pytest.raises(SpecError) as caught:
        load("20_trigger_cron.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (9, 18)
    assert 'quote it, e.g. schedule: "*/5 * * * *"' in problem.message


def test_the_cron_example_with_a_real_schedule() -> None:
    text = (SEED / "20_trigger_cron.yml").read_text().replace("*****", '"0 12 * * *"')
    project = load_project_text(text)
    # The reference does not copy the schedule: only train_my_model is scheduled.
    external = lambda project, name: _EMPTY_TEMPLATE  # noqa: E731
    assert resolve_task(project, "train_my_model", external_templates=external).schedule == "0 12 * * *"
    assert resolve_task(project, "my_task", external_templates=external).schedule is None


def test_inline_sequential_pipeline() -> None:
    project = load("21_pipeline_inline.yml")
    pipeline = resolve_task(project, "train_my_model")
    assert pipeline.executor is None
    assert [[step.name for step in stage] for stage in pipeline.pipeline] == [["preprocessing"], ["training"]]
    assert pipeline.pipeline[1][0].resources.gpus == 1
    assert resolve_task(project, "other_task").pipeline == pipeline.pipeline


@pytest.mark.parametrize(
    ("file", "line", "column", "key_line"),
    [("22_pipeline_refs_misindented.yml", 11, 7, 10), ("23_pipeline_parallel.yml", 12, 7, 11)],
)
def test_mis_indented_executor_says_how_to_fix_it(file: str, line: int, column: int, key_line: int) -> None:
    with pytest.raises(SpecError) as caught:
        load(file)
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (line, column)
    assert f"'executor:' is indented 2 more spaces than 'name:' on line {key_line}" in problem.message
    assert "start it in column 5" in problem.message


def test_mis_indentation_fixed_gives_the_sequential_pipeline() -> None:
    pipeline = resolve_task(load_project(FIXTURES / "fixed_pipeline_refs.yml"), "train_my_model")
    assert [[step.name for step in stage] for stage in pipeline.pipeline] == [["preprocessing"], ["training"]]


def test_parallel_example_once_indented_reveals_the_misspelt_reference() -> None:
    with pytest.raises(SpecError) as caught:
        load_project(FIXTURES / "fixed_pipeline_parallel.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (9, 20)
    assert "unknown task 'prepare_datast_two'; did you mean 'prepare_dataset_two'?" in problem.message


def test_parallel_pipeline_with_the_spelling_fixed() -> None:
    text = (FIXTURES / "fixed_pipeline_parallel.yml").read_text().replace("prepare_datast_two", "prepare_dataset_two")
    pipeline = resolve_task(load_project_text(text), "train_my_model")
    assert [[step.name for step in stage] for stage in pipeline.pipeline] == [
        ["prepare_dataset_one", "prepare_dataset_two"],
        ["training"],
    ]


def test_environment_example() -> None:
    task = resolve_task(load("24_environment.yml"), "train_my_model")
    assert [(env.key, env.val) for env in task.environment] == [("SOME_VAR", "SOME_VAL")]


# -- seed 003: the older README dialect --------------------------------------------------


def test_old_readme_task() -> None:
    project = load_project(FIXTURES / "seed_003" / "00_task.yml")
    assert project.name == "bestproject"
    task = resolve_task(project, "download_data")
    assert task.executor is not None
    assert (task.executor.kind, task.executor.command) == (
        "custom",
        "python downloaddata.py",
    )
    assert task.secrets == [AmeSecret(key="storagesecret", inject_as="STORAGE_SECRET")]
    assert [(env.key, env.val) for env in task.environment] == [("PROJECT_ENVIRONMENT", "production")]
    assert (task.resources.cpu_millis, task.resources.memory_bytes) == (2000, 8 * 2**30)


def test_old_readme_pipeline_has_two_misaligned_keys() -> None:
    with pytest.raises(SpecError) as caught:
        load_project(FIXTURES / "seed_003" / "01_pipeline.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (24, 8)
    assert "entries of one block must line up" in problem.message


def test_old_readme_pipeline_once_aligned() -> None:
    text = (FIXTURES / "seed_003" / "01_pipeline.yml").read_text()
    text = text.replace("       train_model:", "      train_model:").replace(
        "       upload_model:", "      upload_model:"
    )
    pipeline = resolve_task(load_project_text(text), "main")
    steps = [stage[0] for stage in pipeline.pipeline]
    assert [step.name for step in steps] == ["download_data", "prepare_data", "train_model", "upload_model"]
    assert (steps[2].resources.gpus, steps[2].resources.gpu_memory_bytes) == (1, 24 * 2**30)


def test_old_readme_recurring_task_is_cut_off_by_the_document_end_marker() -> None:
    # The README elides the rest with "...", which YAML reads as "end of document": the
    # secret is left without its envkey.
    with pytest.raises(SpecError) as caught:
        load_project(FIXTURES / "seed_003" / "02_recurring_truncated.yml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (13, 11)
    assert problem.message == (
        "secret 'storagesecret' needs 'envkey' (or 'injectAs'): the environment variable its value is injected as"
    )


def test_old_readme_recurring_task_becomes_a_scheduled_reference() -> None:
    text = (
        (FIXTURES / "seed_003" / "02_recurring_truncated.yml")
        .read_text()
        .replace("...", "          envkey: STORAGE_SECRET")
    )
    project = load_project_text(text)
    daily = resolve_task(project, "daily_training")
    assert daily.schedule == "0 12 * * *"
    assert [stage[0].name for stage in daily.pipeline] == ["download_data"]


# -- seed 000: the rendered docs, where the indentation was lost -------------------------


def test_examples_copied_from_the_rendered_docs_are_explained() -> None:
    flattened = (
        "# ame.yml\ntasks:\n- name: train_my_model\nexecutor:\n!poetry\npythonVersion: 3.11\ncommand: python train.py\n"
    )
    with pytest.raises(SpecError) as caught:
        load_project_text(flattened)
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (6, 1)
    assert "must be indented under 'executor:'" in problem.message


def test_rendered_artifact_example_without_indentation() -> None:
    flattened = (
        "name: artifact_example\ntasks:\n- name: artifact_task\nexecutor:\n!pipEnv\ncommand: python artifacts.py\n"
    )
    with pytest.raises(SpecError) as caught:
        load_project_text(flattened)
    assert caught.value.problems[0].line == 6


_EMPTY_TEMPLATE = load_project_text("templates:\n  - name: empty\n").templates["empty"]
