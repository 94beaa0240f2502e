"""A resolved task survives the trip through a RunSpec (what a remote run carries) unchanged."""

from __future__ import annotations

import pytest

from ame.codecs import run_spec_from_pb, run_spec_to_pb
from ame.run_specs import run_spec_for_task, task_for_run_spec
from ame.spec import load_project_text, resolve_task

AME_YML = """\
project: demo
dataSets:
  - name: images
    path: data/images
tasks:
  - name: train
    executor: !poetry
      pythonVersion: "3.11"
      command: python train.py --epochs 3
    environment:
      - key: MODE
        val: fast
    secrets:
      - !ame
        key: token
        injectAs: TOKEN
      - !vault
        vault: prod
        key: db
        injectAs: DB
    resources:
      cpu: 2
      memory: 1Gi
      storage: 10Gi
      nvidia.com/gpu: 1
      vram: 16Gi
    dataSets:
      - ref:
          name: images
      - ref:
          name: labels
          project: shared
    artifacts:
      paths: [out/model.bin]
      saveChangedFiles: true
    timeout: 90s
    retries: 2
    loop: metadata
  - name: plain
    executor: !custom
      command: echo hi
  - name: flow
    executor: !mlflow {}
  - name: both
    pipeline:
      - plain
      - flow
"""


@pytest.mark.parametrize("name", ["train", "plain", "flow"])
def test_a_task_round_trips_through_its_run_spec(name: str) -> None:
    task = resolve_task(load_project_text(AME_YML, "ame.yml"), name)
    spec = run_spec_for_task(task, project="demo", project_version_id="f" * 64)
    assert spec.project_version_id == "f" * 64
    back = task_for_run_spec(spec)
    assert back == task.model_copy(update={"project": "demo"})


def test_the_spec_carries_what_the_runner_needs() -> None:
    task = resolve_task(load_project_text(AME_YML, "ame.yml"), "train")
    spec = run_spec_for_task(task, project="demo")
    assert (spec.executor.kind, spec.executor.python_version, spec.command) == (
        "poetry",
        "3.11",
        "python train.py --epochs 3",
    )
    assert (spec.timeout_seconds, spec.retries) == (90.0, 2)
    assert spec.artifacts.paths == ["out/model.bin"] and spec.artifacts.save_changed_files
    assert [(s.key, s.inject_as, s.vault) for s in spec.secrets] == [("token", "TOKEN", ""), ("db", "DB", "prod")]
    r = spec.resources
    assert (r.cpu_millis, r.memory_bytes, r.storage_bytes, r.gpus, r.gpu_memory_bytes) == (
        2000,
        2**30,
        10 * 2**30,
        1,
        16 * 2**30,
    )
    assert [(d.name, d.project) for d in spec.data_sets] == [("images", ""), ("labels", "shared")]


@pytest.mark.parametrize("name", ["train", "plain", "flow"])
def test_the_wire_keeps_every_field_of_a_task_run_spec(name: str) -> None:
    spec = run_spec_for_task(resolve_task(load_project_text(AME_YML, "ame.yml"), name), project="demo")
    assert run_spec_from_pb(run_spec_to_pb(spec)) == spec


def test_resources_give_the_kubernetes_form() -> None:
    task = resolve_task(load_project_text(AME_YML, "ame.yml"), "train")
    assert task.resources.to_kubernetes() == {
        "requests": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"},
    }
    assert resolve_task(load_project_text(AME_YML, "ame.yml"), "plain").resources.to_kubernetes() == {}


def test_a_pipeline_has_no_single_run_spec() -> None:
    task = resolve_task(load_project_text(AME_YML, "ame.yml"), "both")
    with pytest.raises(ValueError, match="pipeline"):
        run_spec_for_task(task, project="demo")
