"""The grpc.aio server component: AmeService, health checking and reflection, trace context from metadata."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame_api.grpc.servicer import AmeServicer
from ame_platform.lifecycle import Supervisor

SERVICE_NAME = ame_service_pb2.DESCRIPTOR.services_by_name["AmeService"].full_name


class GrpcServer:
    name = "grpc"

    def __init__(
        self, servicer: AmeServicer, host: str, port: int, *, max_receive_bytes: int = 2 * 1024 * 1024
    ) -> None:
        # A run spec is at most a few hundred KiB and a blob arrives in 1 MiB chunks; only a project's manifest
        # is larger, so the limit follows the project file limit and anything far beyond it is refused undecoded.
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_receive_bytes)])
        ame_service_pb2_grpc.add_AmeServiceServicer_to_server(servicer, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server)
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, supervisor: Supervisor) -> None:
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self) -> None:
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Open streams (log followers) get a short grace, then are cancelled; unary calls finish.
        await self._server.stop(grace=2.0)
