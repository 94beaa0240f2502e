"""Wire (proto) <-> domain conversions shared by the SDK, the platform and the services.

Each service keeps its own conversions in its `convert.py`, which builds on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import (
    ArtifactsSpec,
    DataSetRef,
    EnvVar,
    ExecutorKind,
    ExecutorRef,
    FileLayer,
    LogEnd,
    LogLine,
    PipelineStage,
    PipelineStep,
    Resources,
    RunSpec,
    RunState,
    SecretRef,
    TriggerKind,
    errors,
)
from ame.domain.artifacts import Artifact
from ame.domain.task_args import decode_task_args, encode_task_args

_STATE_TO_PB = {state: run_pb2.RunState.Value(f"RUN_STATE_{state.name}") for state in RunState}
_STATE_FROM_PB = {value: state for state, value in _STATE_TO_PB.items()}
_TRIGGER_TO_PB = {kind: run_pb2.TriggerKind.Value(f"TRIGGER_KIND_{kind.name}") for kind in TriggerKind}
_TRIGGER_FROM_PB = {value: kind for kind, value in _TRIGGER_TO_PB.items()}


class DecodeError(ValueError):
    """A payload that cannot be turned into a domain value."""


def state_to_pb(state: RunState) -> run_pb2.RunState.ValueType:
    return _STATE_TO_PB[state]


def state_from_pb(value: int) -> RunState:
    try:
        return _STATE_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise DecodeError(f"unknown run state {value}") from None


def trigger_to_pb(kind: TriggerKind) -> run_pb2.TriggerKind.ValueType:
    return _TRIGGER_TO_PB[kind]


def trigger_from_pb(value: int) -> TriggerKind:
    return _TRIGGER_FROM_PB.get(value, TriggerKind.API)  # type: ignore[call-overload,no-any-return]


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def now_pb() -> Timestamp:
    return timestamp(datetime.now(UTC))


def run_spec_to_pb(spec: RunSpec) -> run_pb2.RunSpec:
    r = spec.resources
    return run_pb2.RunSpec(
        project=spec.project,
        task=spec.task,
        command=spec.command,
        executor=run_pb2.Executor(
            kind=spec.executor.kind, python_version=spec.executor.python_version, image=spec.executor.image
        ),
        environment=[run_pb2.EnvVar(key=e.key, value=e.value) for e in spec.environment],
        secrets=[run_pb2.SecretRef(key=s.key, inject_as=s.inject_as, vault=s.vault) for s in spec.secrets],
        resources=run_pb2.Resources(
            cpu_millis=r.cpu_millis or 0,
            memory_bytes=r.memory_bytes or 0,
            storage_bytes=r.storage_bytes or 0,
            gpus=r.gpus or 0,
            gpu_memory_bytes=r.gpu_memory_bytes or 0,
            gpu_model=r.gpu_model or "",
        ),
        timeout_seconds=spec.timeout_seconds or 0.0,
        retries=spec.retries,
        artifacts=run_pb2.Artifacts(paths=spec.artifacts.paths, save_changed_files=spec.artifacts.save_changed_files),
        project_version_id=spec.project_version_id,
        labels=spec.labels,
        data_sets=[run_pb2.DataSetRef(name=d.name, project=d.project) for d in spec.data_sets],
        loop=spec.loop,
        args_json="" if spec.args is None else encode_task_args(spec.args),
        input_run_id=spec.input_run_id,
        pipeline=[
            run_pb2.PipelineStage(
                steps=[run_pb2.PipelineStep(name=step.name, spec=run_spec_to_pb(step.spec)) for step in stage.steps]
            )
            for stage in spec.pipeline
        ],
        layers=[run_pb2.FileLayer(run_id=layer.run_id, attempt=layer.attempt) for layer in spec.layers],
        resume_from=spec.resume_from,
    )


def run_spec_from_pb(pb: run_pb2.RunSpec) -> RunSpec:
    """Raises DecodeError (wrapping pydantic's message) when the spec is invalid, e.g. an empty command."""
    r = pb.resources
    try:
        return RunSpec(
            project=pb.project or "default",
            task=pb.task or "adhoc",
            command=pb.command,
            executor=ExecutorRef(
                kind=pb.executor.kind or ExecutorKind.CUSTOM,
                python_version=pb.executor.python_version,
                image=pb.executor.image,
            ),
            environment=[EnvVar(key=e.key, value=e.value) for e in pb.environment],
            secrets=[SecretRef(key=s.key, inject_as=s.inject_as, vault=s.vault) for s in pb.secrets],
            resources=Resources(
                cpu_millis=r.cpu_millis or None,
                memory_bytes=r.memory_bytes or None,
                storage_bytes=r.storage_bytes or None,
                gpus=r.gpus or None,
                gpu_memory_bytes=r.gpu_memory_bytes or None,
                gpu_model=r.gpu_model or None,
            ),
            timeout_seconds=pb.timeout_seconds or None,
            retries=pb.retries,
            artifacts=ArtifactsSpec(paths=list(pb.artifacts.paths), save_changed_files=pb.artifacts.save_changed_files),
            project_version_id=pb.project_version_id,
            labels=dict(pb.labels),
            data_sets=[DataSetRef(name=d.name, project=d.project) for d in pb.data_sets],
            loop=pb.loop,
            args=decode_task_args(pb.args_json),
            input_run_id=pb.input_run_id,
            pipeline=[
                PipelineStage(
                    steps=[PipelineStep(name=step.name, spec=run_spec_from_pb(step.spec)) for step in stage.steps]
                )
                for stage in pb.pipeline
            ],
            layers=[FileLayer(run_id=layer.run_id, attempt=layer.attempt) for layer in pb.layers],
            resume_from=pb.resume_from,
        )
    except DecodeError:
        raise
    except ValueError as exc:
        # pydantic's ValidationError is a ValueError too: name the fields when it is one.
        if not isinstance(exc, ValidationError):
            raise DecodeError(f"args_json: not JSON: {exc}") from exc
        raise DecodeError(errors.describe(exc)) from exc


# Run events and log payloads -------------------------------------------------------------------------

_STREAM_TO_PB: dict[str, log_pb2.LogStream.ValueType] = {
    "stdout": log_pb2.LOG_STREAM_STDOUT,
    "stderr": log_pb2.LOG_STREAM_STDERR,
    "system": log_pb2.LOG_STREAM_SYSTEM,
}
_STREAM_FROM_PB = {value: name for name, value in _STREAM_TO_PB.items()}


@dataclass(frozen=True)
class StateEvent:
    run_id: str
    attempt: int
    state: RunState
    exit_code: int | None
    reason: str
    at: datetime
    launcher_id: str = ""


def state_changed_pb(
    run_id: str,
    attempt: int,
    state: RunState,
    exit_code: int | None,
    reason: str,
    *,
    launcher_id: str = "",
    project: str = "",
    task: str = "",
    at: datetime | None = None,
) -> run_pb2.RunStateChanged:
    event = run_pb2.RunStateChanged(
        run_id=run_id,
        attempt=attempt,
        state=state_to_pb(state),
        reason=reason,
        at=timestamp(at or datetime.now(UTC)),
        launcher_id=launcher_id,
        project=project,
        task=task,
    )
    if exit_code is not None:
        event.exit_code = exit_code
    return event


def parse_state_changed(data: bytes) -> StateEvent:
    event = run_pb2.RunStateChanged()
    try:
        event.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable run event: {exc}") from exc
    if not event.run_id:
        raise DecodeError("run event without a run id")
    return StateEvent(
        run_id=event.run_id,
        attempt=event.attempt,
        state=state_from_pb(event.state),
        exit_code=event.exit_code if event.HasField("exit_code") else None,
        reason=event.reason,
        at=from_timestamp(event.at),
        launcher_id=event.launcher_id,
    )


def log_line_to_pb(line: LogLine) -> log_pb2.LogLine:
    return log_pb2.LogLine(seq=line.seq, stream=_STREAM_TO_PB[line.stream], text=line.text, at=timestamp(line.at))


def log_line_from_pb(pb: log_pb2.LogLine) -> LogLine:
    return LogLine(seq=pb.seq, stream=_STREAM_FROM_PB.get(pb.stream, "stdout"), text=pb.text, at=from_timestamp(pb.at))


def log_end_to_pb(end: LogEnd) -> log_pb2.LogEnd:
    pb = log_pb2.LogEnd(state=state_to_pb(end.state), reason=end.reason, total_lines=end.total_lines)
    if end.exit_code is not None:
        pb.exit_code = end.exit_code
    return pb


def log_end_from_pb(pb: log_pb2.LogEnd) -> LogEnd:
    return LogEnd(
        state=state_from_pb(pb.state),
        exit_code=pb.exit_code if pb.HasField("exit_code") else None,
        reason=pb.reason,
        total_lines=pb.total_lines,
    )


def parse_log_chunk(data: bytes) -> log_pb2.LogChunk:
    chunk = log_pb2.LogChunk()
    try:
        chunk.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable log chunk: {exc}") from exc
    return chunk


def artifact_to_pb(artifact: Artifact) -> run_pb2.Artifact:
    return run_pb2.Artifact(path=artifact.path, size=artifact.size, sha256=artifact.sha256, attempt=artifact.attempt)


def artifact_from_pb(pb: run_pb2.Artifact) -> Artifact:
    try:
        return Artifact(path=pb.path, size=pb.size, sha256=pb.sha256, attempt=pb.attempt)
    except ValidationError as exc:
        raise DecodeError(f"invalid artifact: {exc}") from exc


def artifact_index_to_bytes(run_id: str, attempt: int, artifacts: list[Artifact]) -> bytes:
    index = run_pb2.ArtifactIndex(
        run_id=run_id, attempt=attempt, artifacts=[artifact_to_pb(artifact) for artifact in artifacts]
    )
    return index.SerializeToString(deterministic=True)


def artifact_index_from_bytes(data: bytes) -> list[Artifact]:
    """The artifacts of an attempt's index object; raises DecodeError."""
    index = run_pb2.ArtifactIndex()
    try:
        index.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable artifact index: {exc}") from exc
    return [artifact_from_pb(pb) for pb in index.artifacts]
