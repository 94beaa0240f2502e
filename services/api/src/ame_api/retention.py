"""The api's retention job: removes old project versions, blobs no version lists, and old runs' artifacts.

Each part is off until its setting is set (`AME_API_RETENTION_*`); the job runs every `retention_interval` while
any part is on. What it keeps:

* a version younger than `retention_versions_after`, each project's latest version, and any version a run that
  has not ended (or one created within that window) names;
* a blob any remaining version lists, or recorded within `retention_blobs_after` (a push in progress uploads
  blobs before it commits the version that lists them);
* the artifacts of a run that has not ended, or ended within `retention_artifacts_after`.

Blobs are removed under the organisation's blob lock (see `repositories.retention`), objects first and then
their rows, so a blob recorded in `project_blobs` is always whole in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ame.domain.artifacts import index_attempt, run_prefix, runs_prefix
from ame_api.project_store import StoreComponent, blob_key, manifest_key
from ame_api.repositories import retention as repo
from ame_api.settings import ApiSettings
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

_BLOB_BATCH = 500


@dataclass
class RetentionReport:
    versions: int = 0
    blobs: int = 0
    artifact_runs: int = 0
    artifact_objects: int = 0


class Retention:
    def __init__(self, runtime: Runtime, settings: ApiSettings, store: StoreComponent) -> None:
        self._rt = runtime
        self._settings = settings
        self._store = store

    @property
    def enabled(self) -> bool:
        s = self._settings
        return any(
            after is not None
            for after in (s.retention_versions_after, s.retention_blobs_after, s.retention_artifacts_after)
        )

    async def run_once(self, now: datetime | None = None) -> RetentionReport:
        now = now or datetime.now(UTC)
        report = RetentionReport()
        s = self._settings
        async with self._rt.pool.acquire() as conn:
            organisations = await repo.organisations(conn)
        for org in organisations:
            if s.retention_versions_after is not None:
                report.versions += await self._versions(org, now - timedelta(seconds=s.retention_versions_after))
            if s.retention_blobs_after is not None:
                report.blobs += await self._blobs(org, now - timedelta(seconds=s.retention_blobs_after))
            if s.retention_artifacts_after is not None:
                runs, objects = await self._artifacts(org, now - timedelta(seconds=s.retention_artifacts_after))
                report.artifact_runs += runs
                report.artifact_objects += objects
        if report.versions or report.blobs or report.artifact_runs:
            log.info(
                "retention removed %d version(s), %d blob(s), the artifacts of %d run(s) (%d objects)",
                report.versions,
                report.blobs,
                report.artifact_runs,
                report.artifact_objects,
            )
        return report

    async def _versions(self, org: str, before: datetime) -> int:
        async with self._rt.pool.acquire() as conn, conn.transaction():
            deleted = await repo.delete_old_versions(conn, organisation=org, before=before)
        if not deleted:
            return 0
        async with self._rt.pool.acquire() as conn:
            held = await repo.versions_still_held(conn, organisation=org, version_ids=deleted)
        # The manifest object is written for launchers; another project with the same files may still use it.
        for version_id in deleted:
            if version_id not in held:
                await self._store.store.delete(manifest_key(org, version_id))
        return len(deleted)

    async def _blobs(self, org: str, before: datetime) -> int:
        removed = 0
        while True:
            async with self._rt.pool.acquire() as conn, conn.transaction():
                await repo.lock_blobs_exclusive(conn, org)
                batch = await repo.unreferenced_blobs(conn, organisation=org, before=before, limit=_BLOB_BATCH)
                for sha256 in batch:
                    await self._store.store.delete(blob_key(org, sha256))
                await repo.forget_blobs(conn, organisation=org, sha256s=batch)
            removed += len(batch)
            if len(batch) < _BLOB_BATCH:
                return removed

    async def _artifacts(self, org: str, before: datetime) -> tuple[int, int]:
        store = self._store.store
        prefix = runs_prefix(org)
        by_run: dict[str, list[str]] = {}
        for info in await store.list(prefix):
            run_id = info.key[len(prefix) :].split("/", 1)[0]
            by_run.setdefault(run_id, []).append(info.key)
        if not by_run:
            return 0, 0
        async with self._rt.pool.acquire() as conn:
            expired = await repo.runs_past(conn, organisation=org, run_ids=list(by_run), before=before)
        objects = 0
        for run_id in sorted(expired):
            keys = [k for k in by_run[run_id] if k.startswith(run_prefix(org, run_id))]
            # Indexes first: a listing never shows an artifact whose bytes are already gone.
            keys.sort(key=lambda key: index_attempt(key) is None)
            for key in keys:
                await store.delete(key)
            objects += len(keys)
        return len(expired), objects
