"""Templates from other projects (`fromTemplate: {name, project}`, `project.template`), resolved on the server.

A version is checked when it is committed against the latest version of each project it takes templates from, in
the same organisation; the versions used are pinned with it (`project_versions.template_pins`), so its schedules,
hooks and every later read resolve the same way whatever is pushed to those projects afterwards.

The projects are read before resolution starts (their `ame.yml` from the object store, then the projects their
templates name in turn), so resolution itself is a plain lookup in memory and runs where the spec code runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg

from ame.domain.projects import MODE_SYMLINK
from ame.spec import ExternalTemplates, Project, SpecError, Template, external_template_refs, load_project_text
from ame.spec.loader import PROJECT_FILE_NAMES
from ame.spec.yaml_tree import Limits
from ame_api.repositories import projects as repo
from ame_platform.storage import ObjectStore

Pool = asyncpg.Pool
BlobKey = Callable[[str, str], str]  # (organisation, sha256) -> object-store key

# How many other projects one version may draw templates from, directly or through their own templates.
MAX_TEMPLATE_PROJECTS = 64


@dataclass
class TemplateProjects:
    """The other projects a version's templates come from, as read for its commit (or from its pins)."""

    organisation: str
    projects: dict[str, tuple[str, Project]] = field(default_factory=dict)  # name -> (version id, project)
    missing: dict[str, str] = field(default_factory=dict)  # name -> why it could not be read

    @property
    def pins(self) -> dict[str, str]:
        return {name: version for name, (version, _) in self.projects.items()}

    def lookup(self) -> ExternalTemplates:
        def find(project: str, name: str) -> Template:
            if project in self.missing:
                raise LookupError(self.missing[project])
            found = self.projects.get(project)
            if found is None:
                raise LookupError(f"project '{project}' was not read for this version")
            version, spec = found
            template = spec.templates.get(name)
            if template is None:
                known = ", ".join(spec.templates) or "none"
                raise LookupError(
                    f"project '{project}' (version {version[:12]}) has no template '{name}' (its templates: {known})"
                )
            return template

        return find


async def read_latest(
    pool: Pool, store: ObjectStore, blob_key: BlobKey, organisation: str, home: str, spec: Project
) -> TemplateProjects:
    """The latest version of every project `spec` takes templates from, transitively (never `home` itself: a
    reference back to the project being pushed is to the version being pushed)."""
    found = TemplateProjects(organisation)
    await _read(pool, store, blob_key, found, home, spec, pins=None)
    return found


async def read_pinned(
    pool: Pool,
    store: ObjectStore,
    blob_key: BlobKey,
    organisation: str,
    home: str,
    spec: Project,
    pins: Mapping[str, str],
) -> TemplateProjects:
    """The pinned versions of the projects `spec` takes templates from (a version committed before pins existed,
    or one whose pinned version was removed, reads as unknown: the resolution then reports it)."""
    found = TemplateProjects(organisation)
    await _read(pool, store, blob_key, found, home, spec, pins=pins)
    return found


async def _read(
    pool: Pool,
    store: ObjectStore,
    blob_key: BlobKey,
    found: TemplateProjects,
    home: str,
    spec: Project,
    *,
    pins: Mapping[str, str] | None,
) -> None:
    pending = [name for name, _ in external_template_refs(spec) if name != home]
    while pending:
        name = pending.pop(0)
        if name in found.projects or name in found.missing or name == home:
            continue
        if len(found.projects) + len(found.missing) >= MAX_TEMPLATE_PROJECTS:
            found.missing[name] = (
                f"the version draws templates from more than {MAX_TEMPLATE_PROJECTS} projects; '{name}' was not read"
            )
            continue
        other = await _load(pool, store, blob_key, found.organisation, name, pins)
        if isinstance(other, str):
            found.missing[name] = other
            continue
        found.projects[name] = other
        pending.extend(project for project, _ in external_template_refs(other[1]) if project != home)


async def _load(
    pool: Pool, store: ObjectStore, blob_key: BlobKey, org: str, name: str, pins: Mapping[str, str] | None
) -> tuple[str, Project] | str:
    """(version id, project) or the reason it cannot be read."""
    async with pool.acquire() as conn:
        if pins is None:
            latest = await repo.latest_version(conn, organisation=org, name=name)
            if latest is None:
                return f"no project '{name}' in organisation '{org}'; push it first (ame project push)"
            project_id, version_id = latest
        else:
            version_id = pins.get(name, "")
            project_id = await repo.find_project_id(conn, organisation=org, name=name) or ""
            if not version_id or not project_id:
                return f"project '{name}' is not pinned by this version"
        files = await repo.get_manifest(conn, project_id=project_id, version_id=version_id)
    if files is None:
        return f"version {version_id[:12]} of project '{name}' is gone"
    entry = next((f for f in files if f.path in PROJECT_FILE_NAMES and f.mode != MODE_SYMLINK), None)
    if entry is None:
        return f"project '{name}' (version {version_id[:12]}) has no ame.yml"
    text = (await store.get_bytes(blob_key(org, entry.sha256))).decode("utf-8-sig", "replace")
    try:
        project = await asyncio.to_thread(load_project_text, text, f"{name}/{entry.path}", limits=Limits())
    except SpecError as error:
        return f"project '{name}' (version {version_id[:12]}) has an invalid ame.yml: {error.problems[0]}"
    return version_id, project
