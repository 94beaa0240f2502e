"""/v1/hooks: deliveries to webhooks (signed, no token: see ame_api.webhooks) and the hook list (`ame hooks list`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ame.domain.limits import NameFilter
from ame.domain.webhooks import Webhook, WebhookDelivery
from ame_api.rest.auth import CurrentPrincipal
from ame_api.webhooks import REFUSED_BODY, HookListing, WebhookService

HOOKS_PREFIX = "/v1/hooks/"


class WebhookList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: list[Webhook]


def webhook_info(hook: HookListing) -> Webhook:
    return Webhook(
        project=hook.project,
        task=hook.task,
        url=hook.url,
        secret_name=hook.secret_name,
        version_id=hook.version_id,
        deliveries=[
            WebhookDelivery(
                delivery_id=d.delivery_id,
                received_at=d.received_at,
                status=d.status,
                outcome=d.outcome,
                run_id=d.run_id,
            )
            for d in hook.deliveries
        ],
    )


def router(webhooks: WebhookService) -> APIRouter:
    api = APIRouter(prefix="/v1/hooks", tags=["webhooks"])

    @api.post(
        "/{org}/{project}/{task}",
        status_code=202,
        summary="Deliver to a webhook",
        description="Starts the task from its project's trigger version with the JSON body as its task arguments. "
        "No token: sign the raw body with the hook's secret, GitHub style (`X-Hub-Signature-256: sha256=<hex>`) "
        "or replay-safe (`X-AME-Timestamp: <unix seconds>` and `X-AME-Signature-256: sha256=<hex>` over "
        "`<timestamp>.<body>`). `X-AME-Delivery` (or `X-GitHub-Delivery`) names the delivery: a redelivery "
        "answers with the same run. 401 for any delivery that cannot be authenticated (always the same answer), "
        "413 for a body over the limit, 429 (with Retry-After) past the hook's rate.",
        responses={401: {"content": {"application/json": {"example": REFUSED_BODY}}}, 413: {}, 429: {}},
    )
    async def deliver(org: str, project: str, task: str, request: Request) -> JSONResponse:
        limited = webhooks.admit(org, project, task)
        if limited is not None:
            return JSONResponse(limited.body, status_code=limited.status, headers=limited.headers)
        limit = webhooks.max_body_bytes
        declared = request.headers.get("content-length")
        too_large = JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return too_large
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                return too_large
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer = await webhooks.deliver(org, project, task, bytes(body), headers)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @api.get(
        "",
        response_model=WebhookList,
        summary="List webhooks with their recent deliveries",
        description="The hooks of each project's trigger version (`triggers: {webhook: ...}` in ame.yml), by "
        "project and task, each with its URL and its most recent deliveries.",
    )
    async def list_hooks(
        principal: CurrentPrincipal,
        project: Annotated[NameFilter | None, Query(description="Only this project's hooks.")] = None,
    ) -> WebhookList:
        return WebhookList(webhooks=[webhook_info(h) for h in await webhooks.list(principal, project=project)])

    return api
