"""A webhook as listings show it (REST, gRPC through the SDK, `ame hooks list`): never its secret's value."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    delivery_id: str
    received_at: datetime
    status: int = Field(description="The HTTP status the delivery was answered with.")
    outcome: str
    run_id: str = Field("", description="The run it started; empty for none.")


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    project: str
    task: str
    url: str = Field(description="Where senders POST deliveries.")
    secret_name: str = Field(description="The secret (AME's secret store) that signs deliveries; never its value.")
    version_id: str = Field(description="The project version whose hook this is (the trigger version).")
    deliveries: list[WebhookDelivery] = Field(default_factory=list, description="Most recent first.")
