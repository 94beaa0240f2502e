"""Merge rules for templates, references and pipeline defaults."""

from __future__ import annotations

from ame.spec import EnvVar, load_project_text, resolve_task
from ame.spec.yaml_writer import to_yaml

TEMPLATED = """
project: demo
templates:
  - name: base
    executor: !pip
      pythonVersion: "3.10"
      command: python base.py
    resources: {cpu: 2, memory: 4Gi, nvidia.com/gpu: 1}
    environment: [{key: MODE, val: base}, {key: KEEP, val: "1"}]
    secrets: [!ame {key: s, injectAs: TOKEN}]
    artifacts: {paths: [logs], saveChangedFiles: true}
    dataSets: [{ref: {name: shared, project: other}}]
    retries: 3
    timeout: 1h
tasks:
  - name: child
    fromTemplate: base
    executor: !poetry
      pythonVersion: "3.11"
      command: python child.py
    resources: {memory: 8Gi}
    environment: [{key: MODE, val: child}, {key: EXTRA, val: x}]
    secrets: [!vault {vault: v, key: k, injectAs: TOKEN}]
    artifacts: {paths: [model]}
    retries: 0
"""


def test_task_fields_override_or_merge_with_the_template() -> None:
    task = resolve_task(load_project_text(TEMPLATED), "child")
    assert task.executor is not None
    assert (task.executor.kind, task.executor.python_version) == ("poetry", "3.11")
    assert (task.resources.cpu_millis, task.resources.memory_bytes, task.resources.gpus) == (2000, 8 * 2**30, 1)
    assert task.environment == [
        EnvVar(key="MODE", val="child"),
        EnvVar(key="KEEP", val="1"),
        EnvVar(key="EXTRA", val="x"),
    ]
    assert [(type(secret).__name__, secret.inject_as) for secret in task.secrets] == [("VaultSecret", "TOKEN")]
    assert task.artifacts.paths == ["logs", "model"]
    assert task.artifacts.save_changed_files is True
    assert [(ref.project, ref.name) for ref in task.data_sets] == [("other", "shared")]
    assert task.retries == 0  # set explicitly on the task: replaces the template's 3
    assert task.timeout_seconds == 3600
    assert task.project == "demo"


def test_templates_can_build_on_templates() -> None:
    text = """
templates:
  - name: gpu
    resources: {nvidia.com/gpu: 2}
  - name: trainer
    fromTemplate: gpu
    executor: !custom {command: ./run.sh}
tasks:
  - name: t
    fromTemplate: {name: trainer}
"""
    task = resolve_task(load_project_text(text), "t")
    assert task.resources.gpus == 2
    assert task.executor is not None
    assert task.executor.command == "./run.sh"


PIPELINE = """
project: demo
tasks:
  - name: nightly
    triggers: {schedule: "0 3 * * *"}
    timeout: 2h
    retries: 2
    environment: {STAGE: nightly}
    pipeline:
      - name: fetch
        executor: !custom {command: ./fetch.sh}
      - - taskRef: train
        - name: evaluate
          executor: !custom {command: ./eval.sh}
          retries: 0
  - name: train
    triggers: {schedule: "0 1 * * *"}
    executor: !custom {command: ./train.sh}
    environment: [{key: STAGE, val: train}]
    timeout: 30m
"""


def test_pipeline_settings_are_defaults_for_its_steps() -> None:
    nightly = resolve_task(load_project_text(PIPELINE), "nightly")
    assert nightly.executor is None
    assert (nightly.schedule, nightly.timeout_seconds) == ("0 3 * * *", 7200)
    fetch, train, evaluate = nightly.steps()
    assert [len(stage) for stage in nightly.pipeline] == [1, 2]
    assert (fetch.retries, fetch.environment, fetch.timeout_seconds) == (2, [EnvVar(key="STAGE", val="nightly")], None)
    assert train.environment == [EnvVar(key="STAGE", val="train")]
    assert (train.retries, train.timeout_seconds, train.schedule) == (2, 1800, None)
    assert evaluate.retries == 0


def test_view_output_reads_back_as_the_same_task() -> None:
    for text, name in ((TEMPLATED, "child"), (PIPELINE, "nightly")):
        original = resolve_task(load_project_text(text), name)
        written = to_yaml(original.to_spec())
        indented = "".join(f"    {line}\n" if i else f"  - {line}\n" for i, line in enumerate(written.splitlines()))
        again = resolve_task(load_project_text("project: demo\ntasks:\n" + indented), name)
        assert again == original, written


def test_view_prints_tags_and_canonical_quantities() -> None:
    written = to_yaml(resolve_task(load_project_text(TEMPLATED), "child").to_spec())
    assert "executor: !poetry" in written
    assert "memory: 8Gi" in written
    assert "- !vault" in written
    assert "timeout: 1h" in written


def test_mlflow_without_a_command_runs_the_mlproject() -> None:
    task = resolve_task(load_project_text("tasks:\n  - name: m\n    executor: !mlflow\n"), "m")
    assert task.executor is not None
    assert task.executor.command == "mlflow run ."


def test_python_version_keeps_the_text_as_written() -> None:
    text = "tasks:\n  - name: t\n    executor: !pip\n      pythonVersion: 3.10\n      command: x\n"
    task = resolve_task(load_project_text(text), "t")
    assert task.executor is not None
    assert task.executor.python_version == "3.10"


LOOPS = """
project: peach
templates:
  - name: fetcher
    loop: metadata
    executor: !custom
      command: python fetch.py
tasks:
  - name: fetch
    fromTemplate: fetcher
  - name: train
    fromTemplate: fetcher
    loop: chrts-gpu
  - name: plain
    executor: !custom
      command: python plain.py
"""


def test_a_task_names_its_loop_or_takes_its_templates() -> None:
    project = load_project_text(LOOPS)
    assert resolve_task(project, "fetch").loop == "metadata"
    assert resolve_task(project, "train").loop == "chrts-gpu"
    assert resolve_task(project, "plain").loop is None
    assert resolve_task(project, "fetch").to_spec()["loop"] == "metadata"
