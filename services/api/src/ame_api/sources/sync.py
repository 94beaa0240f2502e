"""One sync of a git project source, and the loop that runs the syncs that are due.

A sync: fetch the branch head into the source's cache (incremental), and unless that commit was judged before,
check it out, ask `project_in_tree` whether it holds a project, and push it through the very path of
`ame project push` (`ame.packaging.push_project`: the same scan, ignore rules, manifest, missing-blob upload and
commit, here against `ProjectService` in-process), then activate it as `ame project push` does (schedules and
webhooks go live). The version is tagged with the commit's short hash. A broken file leaves the last good
version active and the status in Error with the problems.

Exactly one sync of a source runs at a time across api replicas: a claim takes the row's lease (a short
transaction, never held across git), renewed while the sync runs; a replica that dies leaves a lease that
expires, and the next claim takes the source again. Activation, the one side effect outside the source's row,
runs under the row's lock and only while the lease holds (`repo.hold`), so a replica that stalled past its lease
cannot activate an older commit after the replica that took over activated a newer one. A sync that fails
unexpectedly records Error with the reason and is retried after a backoff, not at the next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from ame.domain.principals import Principal
from ame.domain.projects import ManifestEntry, ProjectVersion
from ame.domain.schedules import Activation
from ame.domain.sources import SourceState
from ame.packaging import PackSettings, ProjectTooLarge, push_project
from ame.sdk.errors import MissingBlobs as ClientMissingBlobs
from ame.spec.peach import find_peach_files
from ame_api.projects import MissingBlobs, ProjectService
from ame_api.repositories import secrets as secrets_repo
from ame_api.repositories import sources as repo
from ame_api.repositories.runs import NotFound
from ame_api.repositories.sources import SourceRow
from ame_api.runs import Conflict, InvalidRequest
from ame_api.secrets.service import SecretService
from ame_api.settings import ApiSettings
from ame_api.sources.git import Credential, Git, GitError, TreeTooLarge, is_ssh_url, scrub
from ame_api.sources.settings import SourceSettings
from ame_api.sources.tree import SourceTree, TreeProblem, project_in_tree
from ame_api.version_checks import InvalidSpec
from ame_platform.clock import Clock
from ame_platform.faults import classify
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")
PEACH_BRANCH = "master"
SHORT_COMMIT = 7  # git's own short hash length: the tag a synced version carries
_PRUNE_EVERY = 600  # looks between removals of caches whose source is gone
_ERROR_BACKOFF = 30.0  # least seconds before a sync that failed unexpectedly is tried again
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class _Outcome(Exception):
    """How a sync ended when it did not make a version: the state and the reason to show."""

    def __init__(self, state: SourceState, reason: str, *, judged: bool) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.judged = judged  # about the commit itself (not judged again), not the way to it (retried)


class _LeaseLost(Exception):
    """The claim's lease was lost (it expired and another replica took the source, or the source was removed):
    the sync stops and records nothing, its outcome is the new holder's to record."""


class _InProcessTransport:
    """`ame.packaging.PushTransport` against this api's ProjectService: what `ame project push` sends over gRPC,
    called in-process. `push_project` runs in a worker thread; each call runs on the event loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, projects: ProjectService, principal: Principal, organisation: str
    ) -> None:
        self._loop = loop
        self._projects = projects
        self._principal = principal
        self._organisation = organisation

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def find_missing_blobs(self, project: str, files: list[ManifestEntry]) -> list[str]:
        return self._call(self._projects.find_missing(self._principal, self._organisation, project, files))

    def upload_blob(self, project: str, sha256: str, size: int, chunks: Iterator[bytes]) -> object:
        async def stream() -> AsyncIterator[bytes]:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk

        return self._call(
            self._projects.upload_blob(self._principal, self._organisation, project, sha256, size, stream())
        )

    def commit_version(self, project: str, files: list[ManifestEntry]) -> ProjectVersion:
        try:
            version, _ = self._call(self._projects.commit(self._principal, self._organisation, project, files))
        except MissingBlobs as exc:
            raise ClientMissingBlobs(str(exc)) from None
        return version


class SourceSyncer:
    """The lifecycle component that syncs due sources: `poll` looks, `wake()` looks at once."""

    name = "projectsrc-sync"

    def __init__(
        self,
        runtime: Runtime,
        settings: ApiSettings,
        sources: SourceSettings,
        projects: ProjectService,
        secrets: SecretService,
        clock: Clock,
    ) -> None:
        self._rt = runtime
        self._api_settings = settings
        self._settings = sources
        self._projects = projects
        self._secrets = secrets
        self._clock = clock
        self._git = Git(sources)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def start(self, supervisor: Supervisor) -> None:
        self._stop.clear()
        self._settings.root().mkdir(parents=True, exist_ok=True)
        self._loop_task = supervisor.spawn(self.name, self._loop())

    async def drain(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _loop(self) -> None:
        looks = 0
        while not self._stop.is_set():
            try:
                if looks % _PRUNE_EVERY == 0:
                    await self.prune_caches()
                looks += 1
                await self.claim_and_start()
            except Exception as exc:
                log.warning(
                    "looking for git sources to sync failed (%s); next look in %.1fs",
                    classify(exc),
                    self._settings.poll,
                    exc_info=True,
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.poll)

    async def claim_and_start(self, source_id: str | None = None) -> int:
        """Claim due sources while this replica has free slots and start their syncs; how many were started."""
        started = 0
        while len(self._running) < self._settings.concurrency and not self._stop.is_set():
            async with self._rt.pool.acquire() as conn:
                claimed = await repo.claim(
                    conn,
                    owner=self._owner,
                    now=self._clock.now(),
                    lease=timedelta(seconds=self._settings.lease),
                    source_id=source_id,
                )
            if claimed is None:
                break
            task = asyncio.create_task(self._sync_leased(claimed), name=f"projectsrc-sync:{claimed.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            started += 1
        return started

    async def _sync_leased(self, claimed: SourceRow) -> None:
        lost = asyncio.Event()
        renewing = asyncio.create_task(self._renew(claimed, lost))
        finished = False
        try:
            finished = await self._sync(claimed, lost)
        except asyncio.CancelledError:
            raise
        except _LeaseLost:
            log.warning("the lease on git source %s was lost; its sync stopped without an outcome", claimed.id)
        except Exception as exc:
            log.exception("sync of git source %s (%s) failed", claimed.id, scrub(claimed.url))
            finished = await self._record_failure(claimed, exc)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            if not finished:
                # Stopping, or a failure that wrote nothing: the lease goes back now rather than at its expiry.
                with contextlib.suppress(Exception):
                    async with self._rt.pool.acquire() as conn:
                        await repo.release(conn, claimed=claimed)
            self._wake.set()  # a slot is free

    async def _record_failure(self, claimed: SourceRow, exc: Exception) -> bool:
        """Record an unexpected failure as Error with its reason, due again after a backoff (not at the next look,
        which would retry a persistent fault every second)."""
        message = scrub(" ".join(str(exc).split()))[:300]
        reason = f"internal error: {type(exc).__name__}" + (f": {message}" if message else "")
        backoff = max(claimed.interval_seconds, _ERROR_BACKOFF)
        try:
            async with self._rt.pool.acquire() as conn:
                return await repo.finish(
                    conn,
                    claimed=claimed,
                    state=SourceState.ERROR,
                    reason=reason,
                    next_sync_at=self._clock.now() + timedelta(seconds=backoff),
                )
        except Exception as failed:
            log.warning("recording the failure of git source %s failed (%s)", claimed.id, classify(failed))
            return False

    async def _renew(self, claimed: SourceRow, lost: asyncio.Event) -> None:
        lease = timedelta(seconds=self._settings.lease)
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            try:
                async with self._rt.pool.acquire() as conn:
                    if not await repo.renew(conn, source_id=claimed.id, lease_seq=claimed.lease_seq, lease=lease):
                        log.warning("the lease on git source %s was lost; its sync's outcome is dropped", claimed.id)
                        lost.set()
                        return
            except Exception as exc:
                log.warning("renewing the lease on git source %s failed (%s)", claimed.id, classify(exc))

    def _next_due(self, claimed: SourceRow) -> datetime:
        return self._clock.now() + timedelta(seconds=claimed.interval_seconds)

    async def _sync(self, claimed: SourceRow, lost: asyncio.Event) -> bool:
        """Sync the claimed source and record the outcome; False when nothing could be recorded."""
        try:
            commit, project, version_id = await self._make_version(claimed, lost)
        except _Outcome as outcome:
            commit = outcome.commit if isinstance(outcome, _OutcomeAt) else ""
            reason = outcome.reason
            log.info("git source %s (%s): %s: %s", claimed.id, claimed.url, outcome.state, reason)
            async with self._rt.pool.acquire() as conn:
                return await repo.finish(
                    conn,
                    claimed=claimed,
                    state=outcome.state,
                    reason=reason,
                    next_sync_at=self._next_due(claimed),
                    checked=(commit, outcome.state.value, reason) if outcome.judged and commit else None,
                )
        async with self._rt.pool.acquire() as conn:
            return await repo.finish(
                conn,
                claimed=claimed,
                state=SourceState.SYNCHRONIZED,
                reason="",
                next_sync_at=self._next_due(claimed),
                checked=(commit, SourceState.SYNCHRONIZED.value, ""),
                synced=(commit, self._clock.now(), project, version_id),
            )

    async def _credential(self, claimed: SourceRow) -> Credential | None:
        if not claimed.secret_name:
            return None
        async with self._rt.pool.acquire() as conn:
            sealed = await secrets_repo.get_many(conn, claimed.organisation, [claimed.secret_name])
        value = (
            self._secrets.open_sealed(claimed.organisation, claimed.secret_name, sealed[claimed.secret_name])
            if claimed.secret_name in sealed
            else None
        )
        if value is None:
            raise _Outcome(
                SourceState.ERROR, f"secret {claimed.secret_name!r} is not in the secret store", judged=False
            )
        return Credential("ssh-key" if is_ssh_url(claimed.url) else "token", value)

    def cache_of(self, source_id: str) -> Path:
        return self._settings.root() / source_id

    async def _default_branch(self, claimed: SourceRow, credential: Credential | None) -> str:
        """The branch a source added without one tracks: the remote's default branch, except that a repository
        whose `master` holds PEACH files is tracked on `master`, as seed 002 says ("all the code ... in the master
        branch"), whatever its default branch. Read once, at the first sync."""
        branch = await self._git.default_branch(claimed.url, credential)
        if branch == PEACH_BRANCH:
            return branch
        cache = self.cache_of(claimed.id)
        try:
            commit = await self._git.fetch(cache / "repo.git", claimed.url, PEACH_BRANCH, credential)
            await self._git.checkout(cache / "repo.git", cache / "tree", commit)
        except GitError:
            return branch  # no master branch
        root = cache / "tree" / claimed.path if claimed.path else cache / "tree"
        return PEACH_BRANCH if await asyncio.to_thread(find_peach_files, root) else branch

    async def prune_caches(self) -> int:
        """Remove the cache directories of sources that no longer exist (removed through any replica)."""
        root = self._settings.root()
        names = await asyncio.to_thread(lambda: [p.name for p in root.iterdir() if p.is_dir()] if root.exists() else [])
        candidates = [n for n in names if _UUID.match(n)]
        if not candidates:
            return 0
        async with self._rt.pool.acquire() as conn:
            alive = await repo.existing_ids(conn, candidates)
        gone = [n for n in candidates if n not in alive and not any(n in t.get_name() for t in self._running)]
        for name in gone:
            await asyncio.to_thread(shutil.rmtree, root / name, True)
        return len(gone)

    async def _make_version(self, claimed: SourceRow, lost: asyncio.Event) -> tuple[str, str, str]:
        credential = await self._credential(claimed)
        cache = self.cache_of(claimed.id)
        branch = claimed.branch
        try:
            if not branch:
                branch = await self._default_branch(claimed, credential)
                async with self._rt.pool.acquire() as conn:
                    if not await repo.set_branch(
                        conn, source_id=claimed.id, lease_seq=claimed.lease_seq, branch=branch
                    ):
                        raise _Outcome(
                            SourceState.ERROR,
                            f"another source of the organisation tracks branch {branch!r} of this URL and path",
                            judged=False,
                        )
            commit = await self._git.fetch(cache / "repo.git", claimed.url, branch, credential)
        except GitError as exc:
            raise _Outcome(SourceState.ERROR, str(exc), judged=False) from None
        finally:
            del credential
        if commit == claimed.checked_commit and claimed.checked_state:
            # Judged before: a version already (no new one), or the same broken file (the same reason).
            if claimed.checked_state == SourceState.SYNCHRONIZED:
                await self._keep_active(claimed, commit)
                return commit, claimed.project, claimed.version_id
            raise _OutcomeAt(commit, SourceState(claimed.checked_state), claimed.checked_reason)
        short = commit[:SHORT_COMMIT]
        try:
            await self._git.checkout(
                cache / "repo.git",
                cache / "tree",
                commit,
                path=claimed.path,
                max_bytes=self._api_settings.project_max_bytes,
                max_files=self._api_settings.project_max_files,
            )
        except TreeTooLarge as exc:
            raise _OutcomeAt(commit, SourceState.ERROR, f"commit {short}: {exc}") from None
        except GitError as exc:
            raise _OutcomeAt(commit, SourceState.ERROR, str(exc), judged=False) from None
        tree = SourceTree(
            organisation=claimed.organisation,
            root=cache / "tree" / claimed.path if claimed.path else cache / "tree",
            path=claimed.path,
            url=claimed.url,
            branch=branch,
            commit=commit,
        )
        if not await asyncio.to_thread(_inside, tree.root, cache / "tree"):
            # A --path through a symbolic link could lead anywhere on the server.
            raise _OutcomeAt(commit, SourceState.ERROR, f"commit {short}: {claimed.path} is a symbolic link")
        try:
            found = await asyncio.to_thread(project_in_tree, tree)
        except TreeProblem as problem:
            raise _OutcomeAt(commit, SourceState.ERROR, f"commit {short}: {problem}") from None
        if found is None:
            where = f" in {claimed.path}" if claimed.path else ""
            if claimed.version_id:
                raise _OutcomeAt(
                    commit,
                    SourceState.ERROR,
                    f"commit {short}: no ame.yml{where} any more; version {claimed.version_id[:12]} stays",
                )
            raise _OutcomeAt(commit, SourceState.PENDING, f"commit {short}: no ame.yml{where} yet")
        if lost.is_set():
            raise _LeaseLost
        version_id = await self._push(claimed, tree, found.name, short)
        return commit, found.name, version_id

    async def _activate(self, claimed: SourceRow, project: str, version_id: str) -> Activation:
        """Activate the version as `ame project push` does, fenced by the claim's lease (see `repo.hold`)."""
        org = claimed.organisation
        async with self._rt.pool.acquire() as conn, conn.transaction():
            if not await repo.hold(conn, claimed=claimed):
                raise _LeaseLost
            return await self._projects.activate(Principal.trigger(org, "projectsrc"), org, project, version_id)

    async def _keep_active(self, claimed: SourceRow, commit: str) -> None:
        """The head is the source's version already: make sure it is the project's active version too (it is not
        when the project was pushed and activated by hand since, or the version was activated by no one)."""
        if not claimed.project or not claimed.version_id:
            return
        async with self._rt.pool.acquire() as conn:
            active = await repo.active_version(conn, organisation=claimed.organisation, project=claimed.project)
        if active == claimed.version_id:
            return
        try:
            await self._activate(claimed, claimed.project, claimed.version_id)
        except (InvalidSpec, InvalidRequest, NotFound, Conflict) as exc:
            raise _OutcomeAt(
                commit, SourceState.ERROR, f"commit {commit[:SHORT_COMMIT]}: {exc}", judged=False
            ) from None
        log.info(
            "git source %s: version %s of %s/%s activated again (the project's active version was %s)",
            claimed.id,
            claimed.version_id[:12],
            claimed.organisation,
            claimed.project,
            active[:12] or "none",
        )

    async def _push(self, claimed: SourceRow, tree: SourceTree, project: str, short: str) -> str:
        """The version `ame project push` would make of the tree, activated as it would activate it."""
        org = claimed.organisation
        principal = Principal.trigger(org, "projectsrc")
        transport = _InProcessTransport(asyncio.get_running_loop(), self._projects, principal, org)
        pack = PackSettings(
            max_bytes=self._api_settings.project_max_bytes, max_files=self._api_settings.project_max_files
        )
        cache = self.cache_of(claimed.id)  # push_project keeps its hash index under it, as the CLI does
        commit = tree.commit
        try:
            result = await asyncio.to_thread(
                push_project, tree.root, project, transport, cache_dir=cache, settings=pack
            )
            activation = await self._activate(claimed, project, result.version.id)
        except (InvalidRequest, ProjectTooLarge, NotFound, Conflict) as exc:
            raise _OutcomeAt(commit, SourceState.ERROR, f"commit {short}: {exc}") from None
        async with self._rt.pool.acquire() as conn:
            await repo.tag_version(conn, organisation=org, project=project, version_id=result.version.id, tag=short)
        log.info(
            "git source %s: commit %s is version %s of %s/%s (%d schedule(s))",
            claimed.id,
            short,
            result.version.id[:12],
            org,
            project,
            len(activation.schedules),
        )
        return result.version.id


def _inside(root: Path, checkout: Path) -> bool:
    """Whether `root` lies in the checkout once links are resolved (a missing directory does)."""
    real, top = os.path.realpath(root), os.path.realpath(checkout)
    return real == top or real.startswith(top + os.sep)


class _OutcomeAt(_Outcome):
    """An outcome about a fetched commit."""

    def __init__(self, commit: str, state: SourceState, reason: str, *, judged: bool = True) -> None:
        super().__init__(state, reason, judged=judged)
        self.commit = commit
