"""Git project sources, the use cases REST and gRPC share: add, list, remove, sync now, and push webhooks.

A source belongs to the caller's organisation: another organisation's source is NOT_FOUND exactly as an unknown
one. The push hook (`POST /v1/source-hooks/{org}/{source_id}`) takes no token: it is signed with the secret the
source names (`--hook-secret`), checked by `ame_api.webhooks.signature_problem` like every signed delivery, and
any delivery it cannot authenticate gets the same 401 as the task webhooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from ame.domain.durations import DurationError, parse_duration
from ame.domain.principals import Principal
from ame.domain.sources import ProjectSource, SourceState
from ame_api import organisations
from ame_api.repositories import secrets as secrets_repo
from ame_api.repositories import sources as repo
from ame_api.repositories.runs import NotFound
from ame_api.repositories.sources import SourceRow
from ame_api.runs import Conflict, InvalidRequest
from ame_api.secrets.service import SecretService, check_name
from ame_api.sources.git import check_branch, check_url
from ame_api.sources.settings import SourceSettings
from ame_api.sources.sync import SourceSyncer
from ame_api.webhooks import REFUSED_BODY, WebhookService
from ame_platform.clock import Clock
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_BAD_PATH_PART = {"", ".", ".."}
_MAX_INTERVAL = 366 * 24 * 3600.0


@dataclass(frozen=True)
class HookAnswer:
    status: int
    body: dict[str, str | bool]


def _check_path(path: str) -> str:
    path = path.strip("/")
    if not path:
        return ""
    if len(path) > 1000 or "\\" in path or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        raise InvalidRequest("--path is a relative directory of the repository (no backslash or control character)")
    if any(part in _BAD_PATH_PART for part in path.split("/")):
        raise InvalidRequest(f"--path {path[:200]!r} must not hold empty, '.' or '..' parts")
    return posixpath.normpath(path)


class SourceService:
    def __init__(
        self,
        runtime: Runtime,
        settings: SourceSettings,
        syncer: SourceSyncer,
        secrets: SecretService,
        webhooks: WebhookService,
        clock: Clock,
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._syncer = syncer
        self._secrets = secrets
        self._webhooks = webhooks
        self._clock = clock

    @property
    def max_hook_body_bytes(self) -> int:
        return self._settings.hook_max_body_bytes

    def hook_url(self, organisation: str, source_id: str) -> str:
        return f"{self._webhooks.public_base()}/v1/source-hooks/{organisation}/{source_id}"

    def info(self, row: SourceRow) -> ProjectSource:
        return ProjectSource(
            id=row.id,
            url=row.url,
            branch=row.branch,
            path=row.path,
            interval_seconds=row.interval_seconds,
            secret_name=row.secret_name,
            hook_secret_name=row.hook_secret_name,
            hook_url=self.hook_url(row.organisation, row.id),
            state=SourceState.SYNCHRONISING if row.syncing else SourceState(row.state),
            reason=row.reason,
            synced_commit=row.synced_commit,
            synced_at=row.synced_at,
            project=row.project,
            version_id=row.version_id,
            created_at=row.created_at,
            next_sync_at=row.next_sync_at,
        )

    async def add(
        self,
        principal: Principal,
        url: str,
        *,
        branch: str = "",
        path: str = "",
        interval: str | float | None = None,
        secret_name: str = "",
        hook_secret_name: str = "",
        organisation: str | None = None,
    ) -> ProjectSource:
        """Track the repository's branch (default: the remote's default branch, read at the first sync)."""
        org = organisations.resolve(principal, organisation)
        try:
            check_url(url, allow_local=self._settings.allow_local)
            if branch:
                check_branch(branch)
            seconds = parse_duration(interval) if interval not in (None, "", 0) else self._settings.default_interval
        except (ValueError, DurationError) as exc:
            raise InvalidRequest(str(exc)) from None
        if not self._settings.min_interval <= seconds <= _MAX_INTERVAL:
            raise InvalidRequest(
                f"the interval must be at least {self._settings.min_interval:g}s (AME_PROJECTSRC_MIN_INTERVAL) "
                "and at most 366 days"
            )
        for name in (secret_name, hook_secret_name):
            if name:
                check_name(name)
        async with self._rt.pool.acquire() as conn:
            try:
                row = await repo.add(
                    conn,
                    organisation=org,
                    url=url,
                    branch=branch,
                    path=_check_path(path),
                    interval_seconds=seconds,
                    secret_name=secret_name,
                    hook_secret_name=hook_secret_name,
                    now=self._clock.now(),
                )
            except repo.Duplicate:
                raise Conflict(
                    f"{url} (branch {branch or 'default'}, path {path or '/'}) is a source already"
                ) from None
        self._syncer.wake()
        log.info("git source %s added in %s: %s", row.id, org, url)
        return self.info(row)

    async def list(self, principal: Principal, *, organisation: str | None = None) -> list[ProjectSource]:
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            return [self.info(r) for r in await repo.list_sources(conn, organisation=org)]

    async def _find(self, org: str, ref: str) -> SourceRow:
        """A source by id, or by URL when exactly one source of the organisation has it."""
        async with self._rt.pool.acquire() as conn:
            row = await repo.get(conn, organisation=org, source_id=ref)
            if row is not None:
                return row
            matching = await repo.find_by_url(conn, organisation=org, url=ref)
        if len(matching) == 1:
            return matching[0]
        if matching:
            ids = ", ".join(m.id for m in matching)
            raise InvalidRequest(f"{len(matching)} sources track {ref[:200]}; name one by id: {ids}")
        raise NotFound(f"git source {ref[:200]!r} not found")

    async def remove(self, principal: Principal, ref: str, *, organisation: str | None = None) -> ProjectSource:
        """Stop tracking; the versions it made stay (they are the project's)."""
        org = organisations.resolve(principal, organisation)
        row = await self._find(org, ref)
        async with self._rt.pool.acquire() as conn:
            if not await repo.remove(conn, organisation=org, source_id=row.id):
                raise NotFound(f"git source {ref[:200]!r} not found")
        return self.info(row)

    async def sync(
        self, principal: Principal, ref: str, *, organisation: str | None = None, wait: bool = True
    ) -> ProjectSource:
        """Sync now; with `wait`, answer once that sync has ended (or after `sync_wait`) with the state."""
        org = organisations.resolve(principal, organisation)
        row = await self._find(org, ref)
        async with self._rt.pool.acquire() as conn:
            wanted = await repo.request_sync(conn, organisation=org, source_id=row.id)
        if wanted is None:
            raise NotFound(f"git source {ref[:200]!r} not found")
        self._syncer.wake()
        deadline = asyncio.get_running_loop().time() + self._settings.sync_wait
        while True:
            async with self._rt.pool.acquire() as conn:
                current = await repo.get(conn, organisation=org, source_id=row.id)
            if current is None:
                raise NotFound(f"git source {ref[:200]!r} not found")
            if not wait or (current.served >= wanted and not current.syncing):
                return self.info(current)
            if asyncio.get_running_loop().time() > deadline:
                return self.info(current)
            await asyncio.sleep(0.1)

    async def push_event(
        self, organisation: str, source_id: str, body: bytes, headers: Mapping[str, str]
    ) -> HookAnswer:
        """A push webhook: a signed delivery asks for a sync at once (202); every unauthenticated one gets the
        same 401 as a task webhook's. A push to another branch is acknowledged and ignored."""
        refused = HookAnswer(401, dict(REFUSED_BODY))
        async with self._rt.pool.acquire() as conn:
            row = await repo.get(conn, organisation=organisation, source_id=source_id)
            sealed = (
                await secrets_repo.get_many(conn, organisation, [row.hook_secret_name])
                if row is not None and row.hook_secret_name
                else {}
            )
        if row is None or row.hook_secret_name not in sealed:
            return refused
        secret = self._secrets.open_sealed(organisation, row.hook_secret_name, sealed[row.hook_secret_name])
        if secret is None:
            return refused
        problem = self._webhooks.check_signature(secret, body, headers)
        del secret
        if problem:
            log.info("push hook of git source %s refused: %s", source_id, problem)
            return refused
        ref = _pushed_ref(body)
        if ref is not None and row.branch and ref != f"refs/heads/{row.branch}":
            return HookAnswer(202, {"source_id": row.id, "sync": False, "reason": f"a push to {ref[:200]}"})
        async with self._rt.pool.acquire() as conn:
            await repo.request_sync(conn, organisation=organisation, source_id=row.id)
        self._syncer.wake()
        return HookAnswer(202, {"source_id": row.id, "sync": True})


def _pushed_ref(body: bytes) -> str | None:
    """The `ref` of a GitHub-style push payload; None when the body is not one (a ping, another event)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    return ref if isinstance(ref, str) else None
