"""Remote runs' artifacts as clients see them: list a run's, download one (streamed), shared by REST and gRPC.

The launcher stores each attempt's files and then its index in the object store (keys in `ame.domain.artifacts`);
this reads the indexes, so only whole artifacts are listed. The run is looked up within the caller's organisation
first, so another organisation's run is as unknown as a run that never existed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from ame import codecs
from ame.domain import Run
from ame.domain.artifacts import (
    Artifact,
    ArtifactPathError,
    artifact_key,
    check_artifact_path,
    index_attempt,
    index_prefix,
    latest_by_path,
)
from ame.domain.principals import Principal
from ame.storage import ObjectNotFound
from ame_api import organisations
from ame_api.project_store import StoreComponent
from ame_api.repositories import runs as runs_repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings
from ame_api.spooling import spooled
from ame_platform.runtime import Runtime

# Listings of ended runs kept in memory, so a client downloading a run's 10,000 artifacts one by one does not
# read every index 10,000 times. Kept briefly, since retention may remove them.
_KEPT_LISTINGS = 32
_KEPT_SECONDS = 60.0


class ArtifactService:
    def __init__(self, runtime: Runtime, settings: ApiSettings, store: StoreComponent) -> None:
        self._rt = runtime
        self._settings = settings
        self._store = store
        self._kept: OrderedDict[tuple[str, str], tuple[float, list[Artifact]]] = OrderedDict()

    async def _run(self, principal: Principal, organisation: str, run_id: str) -> Run:
        org = organisations.resolve(principal, organisation)
        async with self._rt.pool.acquire() as conn:
            run = await runs_repo.find_run(conn, run_id, organisation=org)
        if run is None or run.organisation != org:
            raise NotFound(f"run {run_id[:80]!r} not found")
        return run

    async def list_artifacts(self, principal: Principal, organisation: str, run_id: str) -> list[Artifact]:
        """Every attempt's artifacts, by path then attempt. NotFound for a run the organisation does not have."""
        return await self._listed(await self._run(principal, organisation, run_id))

    async def _listed(self, run: Run) -> list[Artifact]:
        key = (run.organisation, run.id)
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < _KEPT_SECONDS:
            return kept[1]
        store = self._store.store
        found: list[Artifact] = []
        for info in await store.list(index_prefix(run.organisation, run.id)):
            if index_attempt(info.key) is None:
                continue
            try:
                found.extend(codecs.artifact_index_from_bytes(await store.get_bytes(info.key)))
            except ObjectNotFound:
                continue  # removed by retention while we listed
        found.sort(key=lambda artifact: (artifact.path, artifact.attempt))
        # A run that has not ended may add an attempt (or rewrite one redelivered after a crash): never kept.
        if run.state.terminal:
            self._kept[key] = (time.monotonic(), found)
            self._kept.move_to_end(key)
            while len(self._kept) > _KEPT_LISTINGS:
                self._kept.popitem(last=False)
        return found

    async def open_artifact(
        self, principal: Principal, organisation: str, run_id: str, path: str, attempt: int | None = None
    ) -> tuple[Artifact, AsyncIterator[bytes]]:
        """The artifact (the latest attempt's unless `attempt` is given) and its bytes in chunks.

        The bytes are spooled to a temporary file first, as blobs are, so the store's client is not held while a
        slow client reads; nothing is held in memory.
        """
        try:
            check_artifact_path(path)
        except ArtifactPathError as exc:
            raise InvalidRequest(str(exc)) from None
        if attempt is not None and attempt < 1:
            raise InvalidRequest("attempt must be 1 or more")
        run = await self._run(principal, organisation, run_id)
        org = run.organisation
        listed = await self._listed(run)
        if attempt is None:
            chosen = latest_by_path(listed).get(path)
        else:
            chosen = next((a for a in listed if a.path == path and a.attempt == attempt), None)
        if chosen is None:
            which = f" of attempt {attempt}" if attempt is not None else ""
            raise NotFound(f"run {run_id} has no artifact {path[:200]!r}{which}")
        chunks = await spooled(
            self._store.store,
            artifact_key(org, run_id, chosen.attempt, path),
            spool_dir=self._settings.project_spool_dir,
            prefix="artifact-",
            missing=f"run {run_id} has no artifact {path[:200]!r} any more",
        )
        return chosen, chunks
