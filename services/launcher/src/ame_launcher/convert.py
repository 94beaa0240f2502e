"""The only module of the launcher where generated contracts meet domain types."""

from __future__ import annotations

from typing import TypeAlias

from ame import bus_messages, codecs, log_batches, project_codecs
from ame.bus_messages import DataSetOutput, DataSetSource, DecodeError, LaunchCommand, ProjectSource
from ame.contracts.log.v1 import log_pb2
from ame.domain import LogEnd, LogStreamName, RunSpec, RunState
from ame.domain.projects import ManifestEntry

__all__ = ["DataSetOutput", "DataSetSource", "DecodeError", "LaunchCommand", "ProjectSource", "RunSpec"]


def manifest_object(version_id: str, entries: list[ManifestEntry]) -> bytes:
    """A data set version's manifest, in the form project versions' manifests take in the object store."""
    return project_codecs.manifest_object(version_id, entries)


def parse_launch(data: bytes) -> LaunchCommand:
    return bus_messages.parse_launch(data)


def parse_manifest(data: bytes) -> tuple[str, list[ManifestEntry]]:
    """A version's manifest object: (version id, entries); raises DecodeError."""
    return project_codecs.parse_manifest_object(data)


def placeholder_spec(project: str, task: str) -> RunSpec:
    """The spec of a run reported without being launched: only its names travel in the events."""
    return RunSpec(project=project or "default", task=task or "adhoc", command="-")


def parse_cancel(data: bytes) -> tuple[str, int, str]:
    return bus_messages.parse_cancel(data)


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
    return chunk.SerializeToString(), bus_messages.log_chunk_msg_id(run_id, attempt, chunk)


def state_msg_id(run_id: str, attempt: int, state: RunState) -> str:
    return bus_messages.state_msg_id(run_id, attempt, state)


def last_logged(data: bytes, attempt: int) -> tuple[int, int] | None:
    """(next seq, time of the last line in ns) of a run's last log chunk, if it belongs to `attempt` and has lines."""
    chunk = log_pb2.LogChunk()
    try:
        chunk.ParseFromString(data)
    except Exception:
        return None
    if chunk.attempt != attempt or not chunk.lines:
        return None
    last = chunk.lines[-1]
    return last.seq + 1, last.at.seconds * 1_000_000_000 + last.at.nanos
