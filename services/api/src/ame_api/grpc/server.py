"""The grpc.aio server component: AmeService, health checking and reflection, trace context from metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ame.contracts.api.v1 import ame_service_pb2
from ame_api.grpc.decoding import strict_parser
from ame_api.grpc.servicer import AmeServicer
from ame_platform.lifecycle import Supervisor

_SERVICE = ame_service_pb2.DESCRIPTOR.services_by_name["AmeService"]
SERVICE_NAME = _SERVICE.full_name


_MAKERS: dict[tuple[bool, bool], Any] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _handlers(servicer: AmeServicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """What the generated `add_AmeServiceServicer_to_server` registers, with strict request decoding."""
    handlers = {}
    for method in _SERVICE.methods:
        request = getattr(ame_service_pb2, method.input_type.name)
        response = getattr(ame_service_pb2, method.output_type.name)
        make = _MAKERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=strict_parser(request),
            response_serializer=response.SerializeToString,
        )
    return handlers


class GrpcServer:
    name = "grpc"

    def __init__(
        self,
        servicer: AmeServicer,
        host: str,
        port: int,
        auth: grpc.aio.ServerInterceptor,
        *,
        max_receive_bytes: int = 2 * 1024 * 1024,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """`tls`: (certificate, key) PEM files to serve TLS with."""
        # A run spec is at most a few hundred KiB and a blob arrives in 1 MiB chunks; only a project's manifest
        # is larger, so the limit follows the project file limit and anything far beyond it is refused undecoded.
        # Every call passes `auth` (ame_api.grpc.auth): health and reflection are public, the rest need a token.
        self._server = grpc.aio.server(
            interceptors=[auth], options=[("grpc.max_receive_message_length", max_receive_bytes)]
        )
        handlers = _handlers(servicer)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        self._server.add_registered_method_handlers(SERVICE_NAME, handlers)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server)
        self.host = host
        if tls is None:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        else:
            credentials = grpc.ssl_server_credentials([(tls[1].read_bytes(), tls[0].read_bytes())])
            self.port = self._server.add_secure_port(f"{host}:{port}", credentials)
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
