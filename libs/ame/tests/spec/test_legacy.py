"""Older spellings (old README, first implementation) load into the same model."""

from __future__ import annotations

import pytest

from ame.spec import AmeSecret, EnvVar, SpecError, load_project_text, resolve_task


def test_first_implementation_spellings() -> None:
    text = """
name: myproject
dataSets:
  - name: mnist
    path: data
    taskRef: fetch
tasks:
  - name: training
    executor: !pipEnv {command: python train.py}
    env: [{key: MODE, val: train}]
    secrets: [{ame: {key: blob, injectAs: BLOB}}]
    dataSets: [mnist, otherproject.images]
    artifactCfg: {saveChangedFiles: true, paths: []}
  - name: fetch
    executor: {pip: {command: python fetch.py}}
"""
    project = load_project_text(text)
    assert project.name == "myproject"
    task = resolve_task(project, "training")
    assert task.environment == [EnvVar(key="MODE", val="train")]
    assert task.secrets == [AmeSecret(key="blob", inject_as="BLOB")]
    assert [(ref.project, ref.name) for ref in task.data_sets] == [(None, "mnist"), ("otherproject", "images")]
    assert task.artifacts.save_changed_files is True
    data_set_task = project.data_sets[0].task
    assert data_set_task is not None
    assert data_set_task.task_ref is not None
    assert data_set_task.task_ref.name == "fetch"


def test_old_pipeline_steps_with_taskname() -> None:
    text = "tasks:\n  - name: p\n    pipeline:\n      - taskname: a\n        runcommand: ./a\n"
    step = resolve_task(load_project_text(text), "p").pipeline[0][0]
    assert step.name == "a"
    assert step.executor is not None
    assert step.executor.command == "./a"


def test_environment_as_a_plain_mapping() -> None:
    text = "tasks:\n  - name: t\n    executor: !custom {command: x}\n    environment: {A: '1', B: two}\n"
    assert resolve_task(load_project_text(text), "t").environment == [
        EnvVar(key="A", val="1"),
        EnvVar(key="B", val="two"),
    ]


def test_env_values_keep_their_text() -> None:
    text = "tasks:\n  - name: t\n    executor: !custom {command: x}\n    environment: {ZIP: 0012, ON: true}\n"
    assert [env.val for env in resolve_task(load_project_text(text), "t").environment] == ["0012", "true"]


@pytest.mark.parametrize("key", ["project", "projectname", "projectName", "projectid", "name"])
def test_every_project_name_key(key: str) -> None:
    assert load_project_text(f"{key}: demo\ntasks: []\n").name == "demo"


def test_conflicting_project_names() -> None:
    with pytest.raises(SpecError, match="project name is given twice"):
        load_project_text("project: a\nname: b\n")


def test_old_and_new_spelling_of_the_same_field() -> None:
    text = "tasks:\n  - name: t\n    executor: !custom {command: x}\n    env: [{key: A, val: b}]\n    environment: []\n"
    with pytest.raises(SpecError, match="'environment' repeats 'env'"):
        load_project_text(text)


def test_yaml_anchors_and_merge_keys_share_settings() -> None:
    text = """
tasks:
  - &a
    name: a
    executor: !custom {command: ./run}
    retries: 2
  - <<: *a
    name: b
    retries: 5
"""
    project = load_project_text(text)
    assert [resolve_task(project, name).retries for name in ("a", "b")] == [2, 5]
