"""The webhook methods of AmeService: the list of hooks and their deliveries (deliveries arrive over REST)."""

from __future__ import annotations

from ame.contracts.api.v1 import ame_service_pb2
from ame_api import convert
from ame_api.grpc.auth import caller
from ame_api.grpc.errors import Context, unary
from ame_api.runs import InvalidRequest
from ame_api.webhooks import WebhookService


class WebhookMethods:
    """Mixed into AmeServicer; `_webhooks` is set by its constructor (None on a server without webhooks)."""

    _webhooks: WebhookService | None
    retry_after_seconds: int

    @unary
    async def ListWebhooks(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: ame_service_pb2.ListWebhooksRequest, context: Context
    ) -> ame_service_pb2.ListWebhooksResponse:
        if self._webhooks is None:
            raise InvalidRequest("this server serves no webhooks")
        hooks = await self._webhooks.list(caller(), organisation=request.organisation, project=request.project)
        return ame_service_pb2.ListWebhooksResponse(webhooks=[convert.webhook_pb(h) for h in hooks])
