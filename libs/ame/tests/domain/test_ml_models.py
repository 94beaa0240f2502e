"""A model version's state follows from its runs; the model messages survive the wire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ame import model_messages
from ame.domain import RunSpec, RunState
from ame.domain.ml_models import ModelSummary, ModelVersion, ModelVersionState, version_state

S, F = RunState.SUCCEEDED, RunState.FAILED


@pytest.mark.parametrize(
    ("training", "validation", "has_validation", "expected"),
    [
        (None, None, True, (ModelVersionState.TRAINING, "")),
        (RunState.RUNNING, None, True, (ModelVersionState.TRAINING, "")),
        (F, None, True, (ModelVersionState.FAILED, "training failed")),
        (RunState.CANCELLED, None, True, (ModelVersionState.FAILED, "training cancelled")),
        (S, None, True, (ModelVersionState.VALIDATING, "")),
        (S, RunState.QUEUED, True, (ModelVersionState.VALIDATING, "")),
        (S, F, True, (ModelVersionState.FAILED, "validation failed")),
        (S, RunState.TIMED_OUT, True, (ModelVersionState.FAILED, "validation timed_out")),
        (S, S, True, (ModelVersionState.VALIDATED, "")),
        (S, None, False, (ModelVersionState.VALIDATED, "")),
    ],
)
def test_state_of_a_version_from_its_runs(
    training: RunState | None,
    validation: RunState | None,
    has_validation: bool,
    expected: tuple[ModelVersionState, str],
) -> None:
    assert version_state(training, validation, has_validation=has_validation) == expected


def test_model_messages_round_trip() -> None:
    spec = RunSpec(project="p", task="train", command="python train.py", labels={"ame.model": "m"})
    request = model_messages.TrainRequest("v1", "default", "p", "m", 3, spec, None)
    assert model_messages.parse_train_requested(model_messages.encode_train_requested(request)) == request
    with_validation = model_messages.TrainRequest("v1", "default", "p", "m", 3, spec, spec.model_copy())
    decoded = model_messages.parse_train_requested(model_messages.encode_train_requested(with_validation))
    assert decoded == with_validation

    run = model_messages.RunRequest(
        "v1", "default", "validate", "0" * 32, "model:v1:validate", spec.model_copy(update={"input_run_id": "r1"})
    )
    assert model_messages.parse_run_requested(model_messages.encode_run_requested(run)) == run
    with pytest.raises(model_messages.DecodeError):
        model_messages.parse_run_requested(b"\xff\xff")

    version = ModelVersion(
        id="v1",
        organisation="default",
        project="p",
        model="m",
        number=2,
        project_version_id="a" * 64,
        training_run_id="t",
        state=ModelVersionState.FAILED,
        reason="validation failed",
        mlflow_version="4",
        created_at=datetime(2026, 12, 2, tzinfo=UTC),
    )
    summary = ModelSummary(project="p", model="m", latest=version, latest_validated=None)
    assert model_messages.summary_from_pb(model_messages.summary_to_pb(summary)) == summary
