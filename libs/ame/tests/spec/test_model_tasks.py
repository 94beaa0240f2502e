"""`models:` tasks resolved for training: taskRef keeps the task's name, inline tasks get one, errors name the model."""

from __future__ import annotations

import pytest

from ame.spec import SpecError, load_project_text, resolve_model

PROJECT = """\
project: demo
templates:
  - name: small
    resources:
      cpu: 1
models:
  - name: recommender
    training:
      task:
        taskRef: train
    validationTask:
      fromTemplate: small
      executor: !custom
        command: python validate.py
  - name: untested
    training:
      task:
        executor: !custom
          command: python train.py
tasks:
  - name: train
    executor: !custom
      command: python train.py
    artifacts:
      paths: [model.pkl]
"""


def test_training_by_reference_and_validation_inline() -> None:
    project = load_project_text(PROJECT)
    training, validation = resolve_model(project, "recommender")
    assert (training.name, training.executor and training.executor.command) == ("train", "python train.py")
    assert training.artifacts.paths == ["model.pkl"]
    assert validation is not None
    assert validation.name == "recommender-validation" and validation.resources.cpu_millis == 1000

    training, validation = resolve_model(project, "untested")
    assert training.name == "untested-training" and validation is None


def test_an_unknown_model_is_named_with_a_suggestion() -> None:
    with pytest.raises(SpecError, match=r"no model named 'recomender'.*did you mean 'recommender'"):
        resolve_model(load_project_text(PROJECT), "recomender")
