"""Models (ame.yml `models:`): a model version is one training run, validated by its validation task's run.

The state of a version follows from its runs' states (`version_state`), so the api never stores a copy that could
disagree with the run registry.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ame.domain.run_states import RunState


class ModelVersionState(StrEnum):
    TRAINING = "training"
    VALIDATING = "validating"
    VALIDATED = "validated"
    FAILED = "failed"


class ModelVersion(BaseModel):
    """One training of a model: its run, and its validation run once the training succeeded."""

    model_config = ConfigDict(frozen=True)

    id: str
    organisation: str
    project: str
    model: str
    number: int = Field(ge=1, description="1, 2, ... per model, in the order trainings were asked for.")
    project_version_id: str
    training_run_id: str = Field("", description="Empty until the training run is submitted.")
    validation_run_id: str = Field("", description="Empty until the validation run is submitted.")
    has_validation: bool = True
    state: ModelVersionState = ModelVersionState.TRAINING
    reason: str = ""
    mlflow_version: str = Field("", description="The MLflow registry version the training run registered, if any.")
    created_at: datetime


class ModelSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    project: str
    model: str
    latest: ModelVersion | None = None
    latest_validated: ModelVersion | None = None


def version_state(
    training: RunState | None, validation: RunState | None, *, has_validation: bool
) -> tuple[ModelVersionState, str]:
    """The version's state and why, from its runs' states (None: not submitted yet)."""
    if training is None or not training.terminal:
        return ModelVersionState.TRAINING, ""
    if training != RunState.SUCCEEDED:
        return ModelVersionState.FAILED, f"training {training.value}"
    if not has_validation:
        return ModelVersionState.VALIDATED, ""
    if validation is None or not validation.terminal:
        return ModelVersionState.VALIDATING, ""
    if validation != RunState.SUCCEEDED:
        return ModelVersionState.FAILED, f"validation {validation.value}"
    return ModelVersionState.VALIDATED, ""
