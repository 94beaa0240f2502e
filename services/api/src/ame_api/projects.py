"""Project-version use cases shared by REST and gRPC: find missing blobs, upload one, commit, list, fetch.

A version is a manifest (path, mode, sha256, size) whose sha256 is its id; each file's bytes are a blob in the
object store under the organisation, stored once however many versions and projects hold it. A blob is
recorded in `project_blobs` only once it is whole in the store (project_store.py), so a commit that finds every
blob recorded never makes a half version, whatever uploads were cut off before it. What a version must pass
before it is recorded is checked in version_checks.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from ame.domain.principals import Principal
from ame.domain.projects import (
    PROJECT_NAME,
    ManifestEntry,
    ManifestError,
    ProjectVersion,
    check_sha256,
    digest_rows,
    manifest_digest,
)
from ame.domain.schedules import Activation
from ame.spec import ExternalTemplates, Project
from ame.spec.loader import PROJECT_FILE_NAMES
from ame_api import convert, organisations, templates
from ame_api.peach_loops import peach_files
from ame_api.project_store import StoreComponent, blob_key, blob_prefix, manifest_key, store_blob
from ame_api.repositories import data_sets as data_sets_repo
from ame_api.repositories import peach as peach_repo
from ame_api.repositories import projects as repo
from ame_api.repositories import retention as retention_repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import schedules as schedules_repo
from ame_api.repositories import webhooks as webhooks_repo
from ame_api.repositories.runs import NotFound
from ame_api.runs import Conflict, InvalidRequest
from ame_api.schedules import publish_now, schedules_of, summaries, write_schedule_set
from ame_api.settings import ApiSettings
from ame_api.spooling import spooled
from ame_api.version_checks import InvalidSpec, TooLarge, VersionChecks, data_sets_of_version, has_ame_file
from ame_api.webhooks import hooks_of_version
from ame_platform.bus.publisher import headers_for
from ame_platform.clock import Clock, RealClock
from ame_platform.runtime import Runtime

log = logging.getLogger(__name__)

# What list_versions hands out: a version's sequence number, which fits a bigint.
_PAGE_TOKEN = re.compile(r"[0-9]{1,18}")

_NAME = re.compile(PROJECT_NAME)
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


class MissingBlobs(Conflict):
    """A commit named blobs that are not uploaded yet (409 / FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class VersionPage:
    versions: list[ProjectVersion]
    next_page_token: str


class ProjectService:
    def __init__(
        self, runtime: Runtime, settings: ApiSettings, store: StoreComponent, clock: Clock | None = None
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._store = store
        self._clock = clock or RealClock()
        self._checks = VersionChecks(runtime, settings, store)
        # Called after a version with PEACH tasks is activated (the loop driver's wake-up).
        self.peach_changed: Callable[[], None] | None = None

    @staticmethod
    def _organisation(principal: Principal, organisation: str) -> str:
        return organisations.resolve(principal, organisation)

    @staticmethod
    def _project_name(project: str) -> str:
        if not (1 <= len(project) <= 200) or not _NAME.match(project):
            raise InvalidRequest(
                f"project name {project[:200]!r} must be 1-200 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        return project

    async def find_missing(
        self, principal: Principal, organisation: str, project: str, files: Sequence[ManifestEntry]
    ) -> list[str]:
        """The manifest's blobs the organisation does not hold yet."""
        org = self._organisation(principal, organisation)
        self._project_name(project)
        self._checks.manifest(files)
        async with self._rt.pool.acquire() as conn:
            return await repo.missing_blobs(conn, organisation=org, sha256s=[f.sha256 for f in files])

    async def upload_blob(
        self,
        principal: Principal,
        organisation: str,
        project: str,
        sha256: str,
        size: int,
        chunks: AsyncIterator[bytes],
    ) -> bool:
        """Store a blob after checking its bytes against `sha256` and `size`; False when it was held already."""
        org = self._organisation(principal, organisation)
        self._project_name(project)
        try:
            check_sha256(sha256)
        except ManifestError as exc:
            raise InvalidRequest(str(exc)) from None
        if size < 0:
            raise InvalidRequest("a blob's size cannot be negative")
        if size > self._settings.project_max_bytes:
            raise TooLarge(
                f"the blob is {size} bytes, over the server's limit of {self._settings.project_max_bytes} bytes "
                "(AME_API_PROJECT_MAX_BYTES)"
            )
        return await store_blob(
            self._rt,
            self._store,
            organisation=org,
            sha256=sha256,
            size=size,
            chunks=chunks,
            spool_dir=self._settings.project_spool_dir,
        )

    async def committed(
        self, principal: Principal, organisation: str, project: str, rows: Sequence[tuple[str, int, str, int]]
    ) -> ProjectVersion | None:
        """The version these unvalidated (path, mode, sha256, size) rows commit to, if it exists already.

        A re-push of an unchanged project then skips validating every entry again: the stored version was
        validated when it was created, and the rows hash to its id only if they are its manifest.
        """
        org = self._organisation(principal, organisation)
        self._project_name(project)
        if len(rows) > self._settings.project_max_files:
            return None
        try:
            version_id = digest_rows(rows)
        except UnicodeEncodeError:
            return None
        async with self._rt.pool.acquire() as conn:
            project_id = await repo.find_project_id(conn, organisation=org, name=project)
            if project_id is None:
                return None
            version = await repo.get_version(conn, project_id=project_id, version_id=version_id)
            if version is not None:
                await repo.mark_latest(conn, project_id=project_id, version_id=version_id)
        if version is not None:
            version = await self._repin(org, project, project_id, version)
        return version

    async def commit(
        self,
        principal: Principal,
        organisation: str,
        project: str,
        files: Sequence[ManifestEntry],
        *,
        spec_required: bool = True,
    ) -> tuple[ProjectVersion, bool]:
        """Record the version whose blobs are all uploaded and whose ame.yml is valid; idempotent.

        `spec_required=False` is for versions the api builds itself (an orchestration's ZIP): no ame.yml is read, so
        the version has no tasks, hooks or schedules of its own."""
        org = self._organisation(principal, organisation)
        self._project_name(project)
        self._checks.manifest(files)
        files = sorted(files, key=lambda f: f.path.encode("utf-8"))
        version_id = manifest_digest(files)
        async with self._rt.pool.acquire() as conn:
            # A version is immutable and was checked when it was first committed: a re-push ends here.
            project_id = await repo.find_project_id(conn, organisation=org, name=project)
            existing = None
            if project_id is not None:
                existing = await repo.get_version(conn, project_id=project_id, version_id=version_id)
                if existing is not None:
                    await repo.mark_latest(conn, project_id=project_id, version_id=version_id)
            missing = (
                []
                if existing is not None
                else await repo.missing_blobs(conn, organisation=org, sha256s=[f.sha256 for f in files])
            )
        if project_id is not None and existing is not None:
            return await self._repin(org, project, project_id, existing), False
        if missing:
            first = next(f.path for f in files if f.sha256 == missing[0])
            raise MissingBlobs(
                f"{len(missing)} of the version's blobs are not uploaded yet (the first is {first}, sha256 "
                f"{missing[0]}); upload them and commit again"
            )
        # A version holds ame.yml, PEACH files (peach.yaml, peach.conf/*.yaml), or both.
        peach = await self._checks.peach_tasks(org, project, version_id, files)
        # An orchestration's version (spec_required=False) is plain Python code, with neither.
        needs_ame = spec_required and (has_ame_file(files) or not peach_files(files))
        spec = await self._checks.spec(org, project, files) if needs_ame else None
        others = (
            await self._checks.template_projects(org, project, spec, pins=None)
            if spec is not None
            else templates.TemplateProjects(organisation=org)
        )
        task_names = spec.task_names() if spec is not None else [t.task for t in peach]
        hooks = hooks_of_version(spec, project, version_id, external_templates=others.lookup()) if spec else []
        data_sets = data_sets_of_version(spec, project, version_id, others.lookup()) if spec is not None else []
        if spec is not None:
            # A schedule the server cannot run fails the push, with the reason.
            schedules_of(spec, project, version_id, external_templates=others.lookup())
        await self._checks.symlinks(org, files)
        async with self._rt.pool.acquire() as conn, conn.transaction():
            # Retention removes unreferenced blobs under this organisation's lock: checked again under it, the
            # blobs stay until the version that lists them is committed.
            await retention_repo.lock_blobs_shared(conn, org)
            gone = await repo.missing_blobs(conn, organisation=org, sha256s=[f.sha256 for f in files])
            if gone:
                raise MissingBlobs(
                    f"{len(gone)} of the version's blobs were removed meanwhile (sha256 {gone[0]}); upload them and "
                    "commit again"
                )
            project_id = await repo.ensure_project(conn, organisation=org, name=project)
            version, created = await repo.add_version(
                conn,
                project_id=project_id,
                version_id=version_id,
                files=files,
                task_names=task_names,
                template_pins=others.pins,
            )
            await repo.mark_latest(conn, project_id=project_id, version_id=version_id)
            outbox_id = None
            if created and hooks:
                await webhooks_repo.add_hooks(conn, project_id=project_id, version_id=version_id, hooks=hooks)
            if created and data_sets:
                await data_sets_repo.add_definitions(conn, project_id=project_id, definitions=data_sets)
            if created:
                msg_id = f"project:{project_id}:{version_id}"
                outbox_id = await runs_repo.add_outbox(
                    conn,
                    msg_id=msg_id,
                    subject=self._rt.names.project_version_created,
                    payload=convert.project_version_created(project_id, version),
                    headers=headers_for(msg_id),
                )
        if outbox_id is not None:
            await self._publish_now(outbox_id, project_id, version)
        return version, created

    async def _publish_now(self, outbox_id: int, project_id: str, version: ProjectVersion) -> None:
        # The outbox relay publishes it later if this fails; Nats-Msg-Id makes a double publish harmless.
        msg_id = f"project:{project_id}:{version.id}"
        try:
            await self._rt.js.publish(
                self._rt.names.project_version_created,
                convert.project_version_created(project_id, version),
                headers=headers_for(msg_id),
                timeout=5.0,
            )
        except Exception:
            log.warning("version event for %s failed; the outbox relay will retry", version.id, exc_info=True)
            return
        async with self._rt.pool.acquire() as conn:
            await runs_repo.delete_outbox(conn, outbox_id)

    async def _repin(self, org: str, project: str, project_id: str, version: ProjectVersion) -> ProjectVersion:
        """A re-push of a version that takes templates from other projects resolves them again, against those
        projects' latest versions, as a first push would: pushing means "run with the templates as they are now".
        The files stay what they were; only the pins move, and runs already submitted keep the specs they got."""
        if not version.template_pins:
            return version
        async with self._rt.pool.acquire() as conn:
            files = await repo.get_manifest(conn, project_id=project_id, version_id=version.id)
        if files is None:
            return version
        spec = await self._checks.spec(org, project, files)
        others = await self._checks.template_projects(org, project, spec, pins=None)
        if others.pins == version.template_pins:
            return version
        # The version's hooks start runs from stored specs: they follow the new pins (schedules are resolved again
        # when the version is activated).
        hooks = hooks_of_version(spec, project, version.id, external_templates=others.lookup())
        async with self._rt.pool.acquire() as conn, conn.transaction():
            await repo.set_template_pins(conn, project_id=project_id, version_id=version.id, pins=others.pins)
            await webhooks_repo.replace_hook_specs(conn, project_id=project_id, version_id=version.id, hooks=hooks)
        return version.model_copy(update={"template_pins": others.pins})

    async def version_spec(
        self, principal: Principal, organisation: str, project: str, version_id: str
    ) -> tuple[ProjectVersion, Project, ExternalTemplates]:
        """The version, its ame.yml, and the templates of other projects as pinned with it (for the use cases that
        build runs from a pushed version: models)."""
        version, files = await self.get_version(principal, organisation, project, version_id)
        org = version.organisation
        entry = next((f for f in files if f.path in PROJECT_FILE_NAMES), None)
        if entry is None:
            raise InvalidSpec(["no ame.yml or ame.yaml at the project's root; `ame validate` shows what it needs"])
        spec = await self._checks.load(org, entry)
        others = await self._checks.template_projects(org, project, spec, pins=version.template_pins)
        return version, spec, others.lookup()

    async def activate(self, principal: Principal, organisation: str, project: str, version_id: str) -> Activation:
        """Make the version the project's trigger version: its schedules replace the project's, atomically.

        `ame project push` calls this after its commit (unless --no-triggers); a remote `ame task run` does not, so
        an experiment never replaces production schedules. The schedule set goes to the scheduler through the
        outbox in the same transaction as the change. Activating the trigger version again re-sends its set.
        """
        org = self._organisation(principal, organisation)
        project_id = await self._project_id(org, project)
        missing = NotFound(f"version {version_id[:80]!r} of project {project!r} not found")
        if not _VERSION_ID.match(version_id):
            raise missing
        async with self._rt.pool.acquire() as conn:
            files = await repo.get_manifest(conn, project_id=project_id, version_id=version_id)
        if files is None:
            raise missing
        entry = next((f for f in files if f.path in PROJECT_FILE_NAMES), None)
        peach = await self._checks.peach_tasks(org, project, version_id, files)
        if entry is None and not peach_files(files):
            raise InvalidSpec(["no ame.yml or ame.yaml at the project's root; `ame validate` shows what it needs"])
        spec: Project | None = None
        wanted = []
        if entry is not None:
            spec = await self._checks.load(org, entry)
            async with self._rt.pool.acquire() as conn:
                version = await repo.get_version(conn, project_id=project_id, version_id=version_id)
            pins = version.template_pins if version is not None else {}
            others = await self._checks.template_projects(org, project, spec, pins=pins)
            wanted = schedules_of(spec, project, version_id, external_templates=others.lookup())
        async with self._rt.pool.acquire() as conn, conn.transaction():
            generation = await schedules_repo.activate(conn, project_id=project_id, version_id=version_id)
            rows = await schedules_repo.replace(
                conn, organisation=org, project=project, version_id=version_id, schedules=wanted
            )
            sent = await write_schedule_set(
                self._rt,
                conn,
                organisation=org,
                project=project,
                project_id=project_id,
                version_id=version_id,
                generation=generation,
                rows=rows,
            )
            last = await schedules_repo.last_runs(conn, organisation=org, keys=[(project, r.task) for r in rows])
            await peach_repo.replace_tasks(conn, organisation=org, project=project, tasks=peach)
        await publish_now(self._rt, sent)
        if self.peach_changed is not None:
            self.peach_changed()
        log.info(
            "project %s/%s: version %s activated with %d schedule(s) and %d PEACH task(s)",
            org,
            project,
            version_id[:12],
            len(rows),
            len(peach),
        )
        return Activation(
            project=project,
            project_version_id=version_id,
            schedules=summaries(self._clock, org, rows, last),
            triggers_enabled=spec is None or spec.enable_triggers is not False,
        )

    async def _project_id(self, org: str, project: str) -> str:
        self._project_name(project)
        async with self._rt.pool.acquire() as conn:
            project_id = await repo.find_project_id(conn, organisation=org, name=project)
        if project_id is None:
            raise NotFound(f"project {project!r} not found")
        return project_id

    async def list_versions(
        self,
        principal: Principal,
        organisation: str,
        project: str,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> VersionPage:
        if page_token and not _PAGE_TOKEN.fullmatch(page_token):
            raise InvalidRequest("page_token is not one this server handed out")
        org = self._organisation(principal, organisation)
        project_id = await self._project_id(org, project)
        limit = min(page_size or self._settings.list_page_size, 1000)
        async with self._rt.pool.acquire() as conn:
            rows = await repo.list_versions(
                conn, project_id=project_id, before_seq=int(page_token) if page_token else None, limit=limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return VersionPage([v for _, v in rows], str(rows[-1][0]) if more else "")

    async def get_version(
        self, principal: Principal, organisation: str, project: str, version_id: str
    ) -> tuple[ProjectVersion, list[ManifestEntry]]:
        org = self._organisation(principal, organisation)
        project_id = await self._project_id(org, project)
        if not _VERSION_ID.match(version_id):
            raise NotFound(f"version {version_id[:80]!r} of project {project!r} not found")
        async with self._rt.pool.acquire() as conn:
            version = await repo.get_version(conn, project_id=project_id, version_id=version_id)
            files = await repo.get_manifest(conn, project_id=project_id, version_id=version_id)
        if version is None or files is None:
            raise NotFound(f"version {version_id[:80]!r} of project {project!r} not found")
        return version, files

    async def launch_source(self, organisation: str, project: str, version_id: str) -> tuple[str, str]:
        """The (manifest key, blob prefix) a launcher materialises the run's version from.

        Refuses a version the project does not have. The manifest object is written the first time a run names
        the version (idempotent: every writer writes the same bytes), so a version committed before launchers read
        manifests from the store runs too, and a version nobody runs costs nothing.
        """
        org = organisation  # the submitting caller's, checked by RunService
        missing = InvalidRequest(f"project {project!r} has no version {version_id[:80]!r}; push it first")
        async with self._rt.pool.acquire() as conn:
            project_id = await repo.find_project_id(conn, organisation=org, name=project)
            if project_id is None or not _VERSION_ID.match(version_id):
                raise missing
            if await repo.get_version(conn, project_id=project_id, version_id=version_id) is None:
                raise missing
        key = manifest_key(org, version_id)
        if not await self._store.store.exists(key):
            async with self._rt.pool.acquire() as conn:
                files = await repo.get_manifest(conn, project_id=project_id, version_id=version_id)
            if files is None:
                raise missing
            await self._store.store.put_bytes(key, convert.manifest_object(version_id, files))
        return key, blob_prefix(org)

    async def read_blob(
        self, principal: Principal, organisation: str, project: str, sha256: str
    ) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks, read from a spooled copy so the store's client is not held while sending."""
        org = self._organisation(principal, organisation)
        self._project_name(project)
        try:
            check_sha256(sha256)
        except ManifestError as exc:
            raise InvalidRequest(str(exc)) from None
        async with self._rt.pool.acquire() as conn:
            if not await repo.has_blob(conn, organisation=org, sha256=sha256):
                raise NotFound(f"blob {sha256} not found")
        return await spooled(
            self._store.store,
            blob_key(org, sha256),
            spool_dir=self._settings.project_spool_dir,
            prefix="blob-",
            missing=f"blob {sha256} not found",
        )
