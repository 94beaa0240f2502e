"""What a pushed version must pass before it is recorded or activated, read from its files in the object store.

The checks are `ame validate`'s, with its messages: the server's size limits, the manifest, `ame.yml` (and the
templates it takes from other projects), PEACH files, symbolic links, and the data sets the version declares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from ame.data_sets import definitions_of
from ame.domain.projects import (
    MAX_SYMLINK_TARGET_BYTES,
    MODE_SYMLINK,
    ManifestEntry,
    ManifestError,
    check_manifest,
    symlink_escapes,
)
from ame.run_specs import run_spec_for_task
from ame.spec import ExternalTemplates, Project, SpecError, check_project, load_project_text
from ame.spec.loader import PROJECT_FILE_NAMES
from ame.spec.yaml_tree import Limits
from ame_api import templates
from ame_api.peach_loops import PeachProblems, tasks_of_version
from ame_api.project_store import StoreComponent, blob_key
from ame_api.repositories import peach as peach_repo
from ame_api.repositories.data_sets import Definition
from ame_api.runs import InvalidRequest
from ame_api.settings import ApiSettings
from ame_platform.runtime import Runtime


class TooLarge(InvalidRequest):
    """Over the project size or file-count limit (413 / INVALID_ARGUMENT); the message names the limit."""


class InvalidSpec(InvalidRequest):
    """The version's ame.yml is invalid; `problems` are `file:line:col: message` lines, as `ame validate` prints."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def has_ame_file(files: Sequence[ManifestEntry]) -> bool:
    return any(f.path in PROJECT_FILE_NAMES for f in files)


def data_sets_of_version(
    spec: Project, project: str, version_id: str, external_templates: ExternalTemplates
) -> list[Definition]:
    """Each data set the version declares with a task, its producer as a run spec; a producer may be built on
    another project's template (`external_templates`, the ones this version pins)."""
    try:
        definitions = definitions_of(spec, external_templates=external_templates)
    except SpecError as error:
        raise InvalidSpec([str(p) for p in error.problems]) from None
    return [
        Definition(
            project,
            d.name,
            d.path,
            d.definition_hash,
            version_id,
            run_spec_for_task(d.producer, project=project, project_version_id=version_id),
            d.max_bytes,
        )
        for d in definitions
    ]


class VersionChecks:
    """The checks ProjectService runs on a version's files; the blobs they read are in the store already."""

    def __init__(self, runtime: Runtime, settings: ApiSettings, store: StoreComponent) -> None:
        self._rt = runtime
        self._settings = settings
        self._store = store

    def manifest(self, files: Sequence[ManifestEntry]) -> None:
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

    async def spec(self, org: str, project: str, files: Sequence[ManifestEntry]) -> Project:
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
        spec = await self.load(org, entry)
        if spec.name and spec.name != project:
            raise InvalidSpec([f"{entry.path}: the file names project {spec.name!r}, but this push is for {project!r}"])
        return spec

    async def load(self, org: str, entry: ManifestEntry) -> Project:
        """The project file `entry` of a version, loaded as `ame validate` loads it; InvalidSpec with its problems
        (a file that is not UTF-8 text included) otherwise."""
        data = await self._store.store.get_bytes(blob_key(org, entry.sha256))
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
            raise InvalidSpec([f"{entry.path}:{line}:{column}: the file is not UTF-8 text"]) from None
        try:
            return await asyncio.to_thread(load_project_text, text, entry.path, limits=Limits())
        except SpecError as error:
            raise InvalidSpec([str(p) for p in error.problems]) from None

    async def template_projects(
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

    async def peach_tasks(
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

    async def symlinks(self, org: str, files: Sequence[ManifestEntry]) -> None:
        for entry in files:
            if entry.mode != MODE_SYMLINK:
                continue
            if entry.size > MAX_SYMLINK_TARGET_BYTES:
                raise InvalidRequest(f"symbolic link {entry.path!r} has a target over {MAX_SYMLINK_TARGET_BYTES} bytes")
            target = (await self._store.store.get_bytes(blob_key(org, entry.sha256))).decode("utf-8", "replace")
            if symlink_escapes(entry.path, target):
                raise InvalidRequest(f"symbolic link {entry.path!r} points out of the project ({target!r})")
