"""`ame model train --follow` ends even when a newer training hides its version from the model listing: the
version's own runs decide it, as the api decides it from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ame.cli.model_commands import _current
from ame.domain import Run, RunSpec, RunState
from ame.domain.ml_models import ModelSummary, ModelVersion, ModelVersionState

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _version(number: int, **fields: Any) -> ModelVersion:
    return ModelVersion(
        id=f"v{number}",
        organisation="default",
        project="p",
        model="m",
        number=number,
        project_version_id="x" * 64,
        created_at=NOW,
        **fields,
    )


class _Listing:
    """What the api answers: the model's summary shows only v3, and each run's state."""

    def __init__(self, states: dict[str, RunState]) -> None:
        self.states = states

    def list_models(self, project: str) -> list[ModelSummary]:
        return [ModelSummary(project=project, model="m", latest=_version(3), latest_validated=None)]

    def get_run(self, run_id: str) -> Run:
        return Run(id=run_id, spec=RunSpec(command="true"), state=self.states[run_id], created_at=NOW, updated_at=NOW)


@pytest.mark.parametrize(
    ("states", "has_validation", "expected"),
    [
        ({"t": RunState.SUCCEEDED, "v": RunState.SUCCEEDED}, True, ModelVersionState.VALIDATED),
        ({"t": RunState.SUCCEEDED, "v": RunState.FAILED}, True, ModelVersionState.FAILED),
        ({"t": RunState.FAILED, "v": RunState.QUEUED}, True, ModelVersionState.FAILED),
        ({"t": RunState.SUCCEEDED, "v": RunState.RUNNING}, True, ModelVersionState.VALIDATING),
        ({"t": RunState.SUCCEEDED, "v": RunState.QUEUED}, False, ModelVersionState.VALIDATED),
    ],
)
def test_a_hidden_version_is_decided_by_its_runs(
    states: dict[str, RunState], has_validation: bool, expected: ModelVersionState
) -> None:
    hidden = _version(
        1,
        training_run_id="t",
        validation_run_id="v" if has_validation else "",
        has_validation=has_validation,
        state=ModelVersionState.VALIDATING,
    )
    assert _current(_Listing(states), hidden).state == expected  # type: ignore[arg-type]
