"""A data set as the server reports it (`ame datasets list`, REST, gRPC, the SDK)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DataSetSummary(BaseModel):
    """The newest production of one data set of a project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str
    name: str
    status: str = Field(description="pending, running, ready or failed.")
    size_bytes: int = 0
    file_count: int = 0
    version_id: str = Field("", description="The stored version (a manifest digest); empty until ready.")
    run_id: str = Field("", description="The producing run.")
    reason: str = ""
    path: str = Field(description="Where consuming runs find its files, relative to their directory.")
    definition_hash: str = Field(description="Hash of the path and the resolved producing task.")
    generation: int = Field(1, description="1, then one more for each `ame datasets refresh`.")
    updated_at: datetime | None = None
