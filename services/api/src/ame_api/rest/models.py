"""/v1/models: train a model from a pushed version; list each model's latest and latest validated version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ame.domain.limits import NameFilter
from ame.domain.ml_models import ModelSummary, ModelVersion
from ame_api.models import ModelService
from ame_api.rest.auth import CurrentPrincipal

_Name = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class TrainModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    project_version_id: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")


class ModelList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSummary]


def router(models: ModelService) -> APIRouter:
    api = APIRouter(prefix="/v1/models", tags=["models"])

    @api.post(
        "/{model}/train",
        response_model=ModelVersion,
        status_code=201,
        summary="Train a model: its training run, then its validation run",
        description="Records a new version of the model from the pushed project version (its ame.yml `models:` "
        "entry) and starts its training; the validation run follows when the training succeeds, with the training "
        "run's artifacts in its working directory. The version is validated only when the validation succeeds.",
    )
    async def train(principal: CurrentPrincipal, model: _Name, body: TrainModel) -> ModelVersion:
        return await models.train(principal, "", body.project, model, body.project_version_id)

    @api.get("", response_model=ModelList, summary="Each model with its latest and its latest validated version")
    async def list_models(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query(description="Only this project's models.")] = None,
    ) -> ModelList:
        return ModelList(models=await models.list(principal, "", project))

    return api
