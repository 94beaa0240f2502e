"""The model methods of AmeService: train a model from a pushed version, list models."""

from __future__ import annotations

from ame import model_messages
from ame.contracts.api.v1 import ame_service_pb2
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary
from ame_api.models import ModelService


class ModelMethods:
    """Mixed into AmeServicer; `_models` is set by its constructor."""

    _models: ModelService
    retry_after_seconds: int

    @unary
    async def TrainModel(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.TrainModelRequest, context: Context
    ) -> ame_service_pb2.TrainModelResponse:
        version = await self._models.train(
            caller(),
            request.organisation[:200],
            request.project[:200],
            request.model[:200],
            request.project_version_id[:200],
        )
        return ame_service_pb2.TrainModelResponse(version=model_messages.version_to_pb(version))

    @unary
    async def ListModels(  # noqa: N802
        self, request: ame_service_pb2.ListModelsRequest, context: Context
    ) -> ame_service_pb2.ListModelsResponse:
        found = await self._models.list(caller(), request.organisation[:200], request.project[:200] or None)
        return ame_service_pb2.ListModelsResponse(models=[model_messages.summary_to_pb(s) for s in found])
