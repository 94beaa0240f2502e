"""A git project source as listings show it (REST, gRPC through the SDK, `ame projectsrc list`).

Never a secret's value: only the names of the secret store entries it uses.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class SourceState(StrEnum):
    """The words of the issue that asked for sources, the same in every interface."""

    PENDING = "Pending"  # added, and no version synced yet (or the branch holds no project file yet)
    SYNCHRONISING = "Synchronising"  # a replica is syncing it now
    SYNCHRONIZED = "Synchronized"  # the branch head is the project's version
    ERROR = "Error"  # the last sync failed (the reason says why); the last good version stays


class ProjectSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    url: str = Field(description="The repository, as given (never with a password).")
    branch: str = Field(description="The tracked branch: as given, else the remote's default branch.")
    path: str = Field("", description="The project's directory in the repository ('' for its root).")
    interval_seconds: float
    secret_name: str = Field("", description="The secret store entry git authenticates with (token or SSH key).")
    hook_secret_name: str = Field("", description="The secret store entry that signs push webhooks.")
    hook_url: str = Field(description="Where a push webhook (GitHub style, signed) triggers a sync at once.")
    state: SourceState
    reason: str = Field("", description="Why the state is Error (or Pending), with file:line:col for a broken file.")
    synced_commit: str = Field("", description="The last commit that is a project version.")
    synced_at: datetime | None = None
    project: str = Field("", description="The project the source's versions belong to.")
    version_id: str = Field("", description="The version made from synced_commit.")
    created_at: datetime
    next_sync_at: datetime
