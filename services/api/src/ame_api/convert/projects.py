"""Project and data set versions: manifests (on the wire and as stored objects), versions, the version-created
event, data sets as the API shows them."""

from __future__ import annotations

from collections.abc import Iterable

from ame import project_codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.project.v1 import project_pb2
from ame.domain.data_sets import DataSetSummary
from ame.domain.projects import ManifestEntry, ProjectVersion


def project_version_created(project_id: str, version: ProjectVersion) -> bytes:
    return project_pb2.ProjectVersionCreated(
        project=project_pb2.Project(id=project_id, organisation=version.organisation, name=version.project),
        version=project_codecs.version_to_pb(version, project_id),
    ).SerializeToString()


def manifest_from_pb(entries: Iterable[project_pb2.ManifestEntry]) -> list[ManifestEntry]:
    """Raises DecodeError for a bad entry."""
    return project_codecs.entries_from_pb(entries)


def version_to_pb(version: ProjectVersion) -> project_pb2.ProjectVersion:
    return project_codecs.version_to_pb(version)


def manifest_object(version_id: str, entries: Iterable[ManifestEntry]) -> bytes:
    return project_codecs.manifest_object(version_id, entries)


def manifest_to_pb(entries: Iterable[ManifestEntry]) -> list[project_pb2.ManifestEntry]:
    return project_codecs.entries_to_pb(entries)


def parse_manifest_object(data: bytes) -> tuple[str, list[ManifestEntry]]:
    """A stored manifest (a project or data set version's): (version id, entries); raises DecodeError."""
    return project_codecs.parse_manifest_object(data)


def data_set_to_pb(row: DataSetSummary) -> ame_service_pb2.DataSet:
    pb = ame_service_pb2.DataSet(
        project=row.project,
        name=row.name,
        status=row.status,
        size_bytes=row.size_bytes,
        file_count=row.file_count,
        version_id=row.version_id,
        run_id=row.run_id,
        reason=row.reason,
        path=row.path,
        definition_hash=row.definition_hash,
        generation=row.generation,
    )
    if row.updated_at is not None:
        pb.updated_at.FromDatetime(row.updated_at)
    return pb
