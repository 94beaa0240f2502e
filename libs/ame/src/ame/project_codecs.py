"""Project manifests and versions between the protobuf contracts and the domain, for the api and the SDK."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from ame.codecs import DecodeError, from_timestamp, timestamp
from ame.contracts.project.v1 import project_pb2
from ame.domain import errors
from ame.domain.projects import ManifestEntry, ManifestError, ProjectVersion


def entry_to_pb(entry: ManifestEntry) -> project_pb2.ManifestEntry:
    return project_pb2.ManifestEntry(path=entry.path, mode=entry.mode, sha256=entry.sha256, size=entry.size)


def entries_to_pb(entries: Iterable[ManifestEntry]) -> list[project_pb2.ManifestEntry]:
    return [entry_to_pb(e) for e in entries]


def entries_from_pb(entries: Iterable[project_pb2.ManifestEntry]) -> list[ManifestEntry]:
    """Raises DecodeError naming the first bad entry (an escaping path, a bad digest or mode)."""
    decoded: list[ManifestEntry] = []
    for pb in entries:
        try:
            decoded.append(ManifestEntry(path=pb.path, mode=pb.mode, sha256=pb.sha256, size=pb.size))
        except ManifestError as exc:
            raise DecodeError(str(exc)) from None
        except ValidationError as exc:
            raise DecodeError(f"manifest entry {pb.path[:200]!r}: {errors.describe(exc)}") from None
    return decoded


def version_to_pb(version: ProjectVersion, project_id: str = "") -> project_pb2.ProjectVersion:
    return project_pb2.ProjectVersion(
        id=version.id,
        project_id=project_id,
        project=version.project,
        organisation=version.organisation,
        file_count=version.file_count,
        size_bytes=version.size_bytes,
        created_at=timestamp(version.created_at),
        git_commit=version.git_commit,
        template_pins=version.template_pins,
    )


def version_from_pb(pb: project_pb2.ProjectVersion) -> ProjectVersion:
    return ProjectVersion(
        id=pb.id,
        project=pb.project,
        organisation=pb.organisation,
        file_count=pb.file_count,
        size_bytes=pb.size_bytes,
        created_at=from_timestamp(pb.created_at),
        git_commit=pb.git_commit,
        template_pins=dict(pb.template_pins),
    )


def manifest_object(version_id: str, entries: Iterable[ManifestEntry]) -> bytes:
    """The manifest as the api stores it beside the blobs (a ProjectManifest), for launchers to read."""
    return project_pb2.ProjectManifest(version_id=version_id, entries=entries_to_pb(entries)).SerializeToString()


def parse_manifest_object(data: bytes) -> tuple[str, list[ManifestEntry]]:
    """(version id, entries); raises DecodeError for bytes that are not a manifest or hold a bad entry."""
    pb = project_pb2.ProjectManifest()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable project manifest: {exc}") from None
    return pb.version_id, entries_from_pb(pb.entries)
