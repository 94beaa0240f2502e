"""Settings of git project sources (`AME_PROJECTSRC_*`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ame.domain.durations import Duration

_GIB = 1024**3


class SourceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AME_PROJECTSRC_", extra="forbid")

    cache_dir: Path | None = Field(
        None,
        description="Where each source's fetched repository and checked-out tree are kept (one directory per "
        "source, reused by every sync); unset: `ame-projectsrc` under the system temp directory.",
    )
    poll: Duration = Field(
        1.0, gt=0, description="How often each api replica looks for sources due a sync (real seconds)."
    )
    default_interval: Duration = Field(
        60.0, gt=0, description="A source's sync interval when `--interval` is not given."
    )
    min_interval: Duration = Field(10.0, gt=0, description="The shortest sync interval a source may ask for.")
    lease: Duration = Field(
        60.0,
        gt=0,
        description="How long a replica's claim on a source's sync lasts without renewal (renewed while the sync "
        "runs); a replica that dies mid-sync leaves it to another after this.",
    )
    concurrency: int = Field(4, ge=1, le=64, description="Syncs one api replica runs at once.")
    git_timeout: Duration = Field(300.0, gt=0, description="Longest one git command (ls-remote, fetch) may run.")
    max_repo_bytes: int = Field(
        2 * _GIB,
        ge=1,
        description="Largest a source's fetched repository may grow (a fetch past it is stopped), and largest the "
        "files of a commit may be to be checked out (refused before any is written).",
    )
    allow_local: bool = Field(
        False,
        description="Accept repositories on the server's own filesystem (a path or file:// URL). Off by default: "
        "any organisation could otherwise read the server's repositories.",
    )
    token_username: str = Field(
        "x-access-token",
        description="The user name sent with a token over HTTP(S) when the URL names none (GitHub's; GitLab "
        "accepts `oauth2`).",
    )
    hook_max_body_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest push webhook body accepted (GitHub sends at most 25 MiB)."
    )
    sync_wait: Duration = Field(
        120.0, gt=0, description="How long `sync` waits for the sync it asked for before answering with the state."
    )

    def root(self) -> Path:
        return self.cache_dir or Path(tempfile.gettempdir()) / "ame-projectsrc"

    def known_hosts_file(self) -> Path:
        return self.root() / "known_hosts"
