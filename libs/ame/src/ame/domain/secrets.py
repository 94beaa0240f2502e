"""A secret of the server's store as clients see it: a name and times, never a value."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class SecretInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    created_at: datetime
    updated_at: datetime
