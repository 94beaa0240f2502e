"""Project-version use cases shared by REST and gRPC: find missing blobs, upload one, commit, list, fetch.

A version is a manifest (path, mode, sha256, size) whose sha256 is its id; each file's bytes are a blob in the
object store under the organisation, stored once however many versions and projects hold it. A blob is
recorded in `project_blobs` only once it is whole in the store, so a commit that finds every blob recorded
never makes a half version, whatever uploads were cut off before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ame.data_sets import definitions_of
from ame.domain import RunSpec
from ame.domain.principals import Principal
from ame.domain.projects import (
    MAX_SYMLINK_TARGET_BYTES,
    MODE_SYMLINK,
    PROJECT_NAME,
    ManifestEntry,
    ManifestError,
    ProjectVersion,
    check_manifest,
    check_sha256,
    digest_rows,
    manifest_digest,
    symlink_escapes,
)
from ame.domain.schedules import Activation
from ame.run_specs import run_spec_for_task
from ame.spec import ExternalTemplates, Project, SpecError, check_project, load_project_text
from ame.spec.loader import PROJECT_FILE_NAMES
from ame.spec.yaml_tree import Limits
from ame_api import convert, organisations, templates
from ame_api.peach_loops import PeachProblems, peach_files, tasks_of_version
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
from ame_api.spooling import discard, spooled
from ame_api.webhooks import hooks_of_version
from ame_platform.bus.publisher import headers_for
from ame_platform.clock import Clock, RealClock
from ame_platform.lifecycle import Supervisor
from ame_platform.runtime import Runtime
from ame_platform.storage import ObjectStore, open_object_store

log = logging.getLogger(__name__)

# What list_versions hands out: a version's sequence number, which fits a bigint.
_PAGE_TOKEN = re.compile(r"[0-9]{1,18}")

_NAME = re.compile(PROJECT_NAME)
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


class TooLarge(InvalidRequest):
    """Over the project size or file-count limit (413 / INVALID_ARGUMENT); the message names the limit."""


class MissingBlobs(Conflict):
    """A commit named blobs that are not uploaded yet (409 / FAILED_PRECONDITION)."""


class InvalidSpec(InvalidRequest):
    """The version's ame.yml is invalid; `problems` are `file:line:col: message` lines, as `ame validate` prints."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _has_ame_file(files: Sequence[ManifestEntry]) -> bool:
    return any(f.path in PROJECT_FILE_NAMES for f in files)


class StoreComponent:
    """Opens the object store at start and closes it at the end of the drain (after the front doors)."""

    name = "object-store"

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise RuntimeError("the object store is not open yet")
        return self._store

    async def start(self, supervisor: Supervisor) -> None:
        self._store = await self._stack.enter_async_context(open_object_store(self._settings.storage))

    async def drain(self) -> None:
        await self._stack.aclose()


def _data_sets_of_version(
    spec: Project, project: str, version_id: str, external_templates: ExternalTemplates
) -> list[tuple[str, str, str, RunSpec]]:
    """(name, path, definition hash, producer's run spec) of each data set the version declares with a task;
    a producer may be built on another project's template (`external_templates`, the ones this version pins)."""
    try:
        definitions = definitions_of(spec, external_templates=external_templates)
    except SpecError as error:
        raise InvalidSpec([str(p) for p in error.problems]) from None
    return [
        (
            d.name,
            d.path,
            d.definition_hash,
            run_spec_for_task(d.producer, project=project, project_version_id=version_id),
        )
        for d in definitions
    ]


def blob_prefix(organisation: str) -> str:
    return f"orgs/{organisation}/blobs/"


def blob_key(organisation: str, sha256: str) -> str:
    return f"{blob_prefix(organisation)}{sha256[:2]}/{sha256}"


def manifest_key(organisation: str, version_id: str) -> str:
    """Where a version's manifest lies for launchers (a ProjectManifest): content-addressed like the blobs."""
    return f"orgs/{organisation}/manifests/{version_id[:2]}/{version_id}"


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

    def _check_manifest(self, files: Sequence[ManifestEntry]) -> None:
        if len(files) > self._settings.project_max_files:
            raise TooLarge(
                f"the project has {len(files)} files, over the server's limit of {self._settings.project_max_files} "
                "files (AME_API_PROJECT_MAX_FILES)"
            )
        total = sum(f.size for f in files)
        if total > self._settings.project_max_bytes:
            raise TooLarge(
                f"the project is {total} bytes, over the server's limit of {self._settings.project_max_bytes} bytes "
                "(AME_API_PROJECT_MAX_BYTES)"
            )
        try:
            check_manifest(files)
        except ManifestError as exc:
            raise InvalidRequest(str(exc)) from None

    async def find_missing(
        self, principal: Principal, organisation: str, project: str, files: Sequence[ManifestEntry]
    ) -> list[str]:
        """The manifest's blobs the organisation does not hold yet."""
        org = self._organisation(principal, organisation)
        self._project_name(project)
        self._check_manifest(files)
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
        async with self._rt.pool.acquire() as conn:
            if await repo.has_blob(conn, organisation=org, sha256=sha256):
                return False
        spool_dir = self._settings.project_spool_dir
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="blob-", dir=spool_dir)
        spool = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                digest = hashlib.sha256()
                received = 0
                async for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise InvalidRequest(f"the blob is larger than the {size} bytes its header declares")
                    await asyncio.to_thread(_absorb, out, digest, chunk)
            if received != size:
                raise InvalidRequest(f"the blob ended after {received} of the {size} bytes its header declares")
            actual = digest.hexdigest()
            if actual != sha256:
                raise InvalidRequest(
                    f"the uploaded bytes have sha256 {actual}, not {sha256}; was the file changed while it was pushed?"
                )
            key = blob_key(org, sha256)
            await self._store.store.put_file(key, spool)
            async with self._rt.pool.acquire() as conn, conn.transaction():
                await retention_repo.lock_blobs_shared(conn, org)
                # Retention may have removed an unreferenced copy between the put and the lock: put it back
                # while the lock holds retention off, so a recorded blob is always whole in the store.
                if not await self._store.store.exists(key):
                    await self._store.store.put_file(key, spool)
                return await repo.add_blob(conn, organisation=org, sha256=sha256, size=size)
        finally:
            discard(spool)

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
        self._check_manifest(files)
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
        peach = await self._peach_tasks(org, project, version_id, files)
        # An orchestration's version (spec_required=False) is plain Python code, with neither.
        needs_ame = spec_required and (_has_ame_file(files) or not peach_files(files))
        spec = await self._check_spec(org, project, files) if needs_ame else None
        others = (
            await self._template_projects(org, project, spec, pins=None)
            if spec is not None
            else templates.TemplateProjects(organisation=org)
        )
        task_names = spec.task_names() if spec is not None else [t.task for t in peach]
        hooks = hooks_of_version(spec, project, version_id, external_templates=others.lookup()) if spec else []
        data_sets = _data_sets_of_version(spec, project, version_id, others.lookup()) if spec is not None else []
        if spec is not None:
            # A schedule the server cannot run fails the push, with the reason.
            schedules_of(spec, project, version_id, external_templates=others.lookup())
        await self._check_symlinks(org, files)
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
                await data_sets_repo.add_definitions(
                    conn, project_id=project_id, version_id=version_id, definitions=data_sets
                )
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

    async def _check_spec(self, org: str, project: str, files: Sequence[ManifestEntry]) -> Project:
        """The same checks as `ame validate` in the project's directory, with the same messages; returns the
        project the file declares."""
        found = [f for f in files if f.path in PROJECT_FILE_NAMES]
        if not found:
            raise InvalidSpec(["no ame.yml or ame.yaml at the project's root; `ame validate` shows what it needs"])
        if len(found) > 1:
            raise InvalidSpec([f"{found[1].path}: both ame.yml and ame.yaml exist; keep one of them"])
        entry = found[0]
        if entry.mode == MODE_SYMLINK:
            raise InvalidSpec([f"{entry.path}: the project file must be a regular file, not a symbolic link"])
        limits = Limits()
        if entry.size > limits.max_bytes:
            raise InvalidSpec(
                [f"{entry.path}: file is larger than the {limits.max_bytes // 1024} KiB limit for AME files"]
            )
        data = await self._store.store.get_bytes(blob_key(org, entry.sha256))
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
            raise InvalidSpec([f"{entry.path}:{line}:{column}: the file is not UTF-8 text"]) from None
        try:
            spec = await asyncio.to_thread(load_project_text, text, entry.path, limits=limits)
        except SpecError as error:
            raise InvalidSpec([str(p) for p in error.problems]) from None
        if spec.name and spec.name != project:
            raise InvalidSpec([f"{entry.path}: the file names project {spec.name!r}, but this push is for {project!r}"])
        return spec

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
        spec = await self._check_spec(org, project, files)
        others = await self._template_projects(org, project, spec, pins=None)
        if others.pins == version.template_pins:
            return version
        # The version's hooks start runs from stored specs: they follow the new pins (schedules are resolved again
        # when the version is activated).
        hooks = hooks_of_version(spec, project, version.id, external_templates=others.lookup())
        async with self._rt.pool.acquire() as conn, conn.transaction():
            await repo.set_template_pins(conn, project_id=project_id, version_id=version.id, pins=others.pins)
            await webhooks_repo.replace_hook_specs(conn, project_id=project_id, version_id=version.id, hooks=hooks)
        return version.model_copy(update={"template_pins": others.pins})

    async def _template_projects(
        self, org: str, project: str, spec: Project, *, pins: Mapping[str, str] | None
    ) -> templates.TemplateProjects:
        """The projects the version's templates come from (their latest versions at commit, else the pinned ones),
        checked: an unknown project or template, or a cycle through other projects, is InvalidSpec with the line."""
        store = self._store.store
        if pins is None:
            others = await templates.read_latest(self._rt.pool, store, blob_key, org, project, spec)
        else:
            others = await templates.read_pinned(self._rt.pool, store, blob_key, org, project, spec, pins)
        if others.projects or others.missing:
            problems = await asyncio.to_thread(check_project, spec, external_templates=others.lookup())
            if problems:
                raise InvalidSpec([str(p) for p in problems])
        return others

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
        text = (await self._store.store.get_bytes(blob_key(org, entry.sha256))).decode("utf-8-sig")
        try:
            spec = await asyncio.to_thread(load_project_text, text, entry.path, limits=Limits())
        except SpecError as error:
            raise InvalidSpec([str(p) for p in error.problems]) from None
        others = await self._template_projects(org, project, spec, pins=version.template_pins)
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
        peach = await self._peach_tasks(org, project, version_id, files)
        if entry is None and not peach_files(files):
            raise InvalidSpec(["no ame.yml or ame.yaml at the project's root; `ame validate` shows what it needs"])
        spec: Project | None = None
        wanted = []
        if entry is not None:
            text = (await self._store.store.get_bytes(blob_key(org, entry.sha256))).decode("utf-8-sig")
            try:
                spec = await asyncio.to_thread(load_project_text, text, entry.path, limits=Limits())
            except SpecError as error:
                raise InvalidSpec([str(p) for p in error.problems]) from None
            async with self._rt.pool.acquire() as conn:
                version = await repo.get_version(conn, project_id=project_id, version_id=version_id)
            pins = version.template_pins if version is not None else {}
            others = await self._template_projects(org, project, spec, pins=pins)
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

    async def _peach_tasks(
        self, org: str, project: str, version_id: str, files: Sequence[ManifestEntry]
    ) -> list[peach_repo.TaskRow]:
        """The version's PEACH tasks, checked as `ame validate` checks them (InvalidSpec lists the problems)."""

        async def read(sha256: str) -> bytes:
            return await self._store.store.get_bytes(blob_key(org, sha256))

        try:
            return await tasks_of_version(
                read,
                files,
                organisation=org,
                project=project,
                version_id=version_id,
                version_label=version_id[:12],
                settings=self._settings.peach,
            )
        except PeachProblems as exc:
            raise InvalidSpec(exc.problems) from None

    async def _check_symlinks(self, org: str, files: Sequence[ManifestEntry]) -> None:
        for entry in files:
            if entry.mode != MODE_SYMLINK:
                continue
            if entry.size > MAX_SYMLINK_TARGET_BYTES:
                raise InvalidRequest(f"symbolic link {entry.path!r} has a target over {MAX_SYMLINK_TARGET_BYTES} bytes")
            target = (await self._store.store.get_bytes(blob_key(org, entry.sha256))).decode("utf-8", "replace")
            if symlink_escapes(entry.path, target):
                raise InvalidRequest(f"symbolic link {entry.path!r} points out of the project ({target!r})")

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


def _absorb(out: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)
