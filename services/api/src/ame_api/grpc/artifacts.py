"""The artifact methods of AmeService: list a run's artifacts and download one (streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.artifacts import ArtifactService
from ame_api.grpc.auth import caller
from ame_api.grpc.decoding import Refused
from ame_api.grpc.errors import Context, abort_for, unary
from ame_api.runs import InvalidRequest


class ArtifactMethods:
    """Mixed into AmeServicer; `_artifacts` is set by its constructor."""

    _artifacts: ArtifactService
    retry_after_seconds: int

    @unary
    async def ListRunArtifacts(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.ListRunArtifactsRequest, context: Context
    ) -> ame_service_pb2.ListRunArtifactsResponse:
        run_id = convert.run_id_request(request.run_id)
        found = await self._artifacts.list_artifacts(caller(), request.organisation, run_id)
        return ame_service_pb2.ListRunArtifactsResponse(artifacts=[codecs.artifact_to_pb(a) for a in found])

    async def DownloadArtifact(  # noqa: N802
        self, request: ame_service_pb2.DownloadArtifactRequest, context: Context
    ) -> AsyncIterator[ame_service_pb2.DownloadArtifactResponse]:
        try:
            if isinstance(request, Refused):
                raise InvalidRequest(request.message)
            if request.attempt < 0:
                raise InvalidRequest("attempt must be 0 (the latest) or more")
            artifact, chunks = await self._artifacts.open_artifact(
                caller(),
                request.organisation,
                convert.run_id_request(request.run_id),
                request.path,
                request.attempt or None,
            )
            yield ame_service_pb2.DownloadArtifactResponse(artifact=codecs.artifact_to_pb(artifact))
            async for chunk in chunks:
                yield ame_service_pb2.DownloadArtifactResponse(chunk=chunk)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(context, exc, self.retry_after_seconds, "DownloadArtifact")
