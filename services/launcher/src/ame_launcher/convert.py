"""The only module of the launcher where generated contracts meet domain types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ame import codecs, log_batches, project_codecs
from ame.codecs import DecodeError
from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import LogEnd, LogStreamName, RunSpec, RunState
from ame.domain.projects import ManifestEntry

__all__ = ["DecodeError", "LaunchCommand", "ProjectSource", "RunSpec"]


@dataclass(frozen=True)
class ProjectSource:
    """Where the run's project version lies in the object store (keys chosen by the api)."""

    manifest_key: str
    blob_prefix: str


@dataclass(frozen=True)
class LaunchCommand:
    run_id: str
    attempt: int
    organisation: str
    spec: RunSpec
    project_source: ProjectSource | None = None


def parse_launch(data: bytes) -> LaunchCommand:
    pb = run_pb2.LaunchRun()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable launch command: {exc}") from exc
    if not pb.run_id or pb.attempt < 1:
        raise DecodeError("launch command without run id or attempt")
    return LaunchCommand(
        run_id=pb.run_id,
        attempt=pb.attempt,
        organisation=pb.organisation,
        spec=codecs.run_spec_from_pb(pb.spec),
        project_source=(
            ProjectSource(pb.project_source.manifest_key, pb.project_source.blob_prefix)
            if pb.HasField("project_source")
            else None
        ),
    )


def parse_manifest(data: bytes) -> tuple[str, list[ManifestEntry]]:
    """A version's manifest object: (version id, entries); raises DecodeError."""
    return project_codecs.parse_manifest_object(data)


def placeholder_spec(project: str, task: str) -> RunSpec:
    """The spec of a run reported without being launched: only its names travel in the events."""
    return RunSpec(project=project or "default", task=task or "adhoc", command="-")


def parse_cancel(data: bytes) -> tuple[str, int, str]:
    pb = run_pb2.RunCancelRequested()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable cancel request: {exc}") from exc
    return pb.run_id, pb.attempt, pb.reason


def state_changed(
    run_id: str,
    attempt: int,
    state: RunState,
    *,
    launcher_id: str,
    project: str,
    task: str,
    exit_code: int | None = None,
    reason: str = "",
) -> bytes:
    return codecs.state_changed_pb(
        run_id, attempt, state, exit_code, reason, launcher_id=launcher_id, project=project, task=task
    ).SerializeToString()


# A line of output waiting to be published: seq, stream, text, and when it was read (time.time_ns()).
BufferedLine: TypeAlias = tuple[int, LogStreamName, str, int]


def log_chunk(run_id: str, attempt: int, lines: list[BufferedLine], end: LogEnd | None) -> tuple[bytes, str]:
    """The chunk's payload and its Nats-Msg-Id."""
    chunk = log_pb2.LogChunk(run_id=run_id, attempt=attempt)
    chunk.lines.extend([log_batches.line_pb(*line) for line in lines])
    if end is not None:
        chunk.end.CopyFrom(codecs.log_end_to_pb(end))
    return chunk.SerializeToString(), codecs.log_chunk_msg_id(run_id, attempt, chunk)
