"""Every bus message that one service publishes and another consumes: its encoder, its decoder and its
`Nats-Msg-Id`, defined once here so producer and consumer cannot drift (and no service, nor its tests, needs
another service's code to speak to it).

Decoders are tolerant (proto3 ignores fields it does not know, "strict at the edge, tolerant on the bus") and
raise `DecodeError` for a payload nothing can be done with. Message ids make a republish harmless:

* `launch:<run>:<attempt>`     LaunchRun (api for attempt 1, scheduler for retries)
* `cancel:<run>:<attempt>`     RunCancelRequested (api)
* `state:<run>:<attempt>:<state>`  RunStateChanged (launcher, api)
* `log:<run>:<attempt>:<seq>` / `log:<run>:<attempt>:end`  LogChunk (launcher; api for a run cancelled unlaunched)
* `cron:<schedule>:<slot epoch seconds>`  ScheduleFired (scheduler); also the idempotency key of its run
* `retry:<run>:<attempt>`      RunRetryRequested (api's registry -> scheduler), attempt being the new one
* `schedules:<project id>:<generation>`  ProjectSchedules (api -> scheduler), a project's whole schedule set
* `pipeline:<run>`             PipelineStarted (api -> scheduler)
* `pipeline:<parent>:<step>`   PipelineStepRequested (scheduler -> api); also the idempotency key of the step's run
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ame import codecs
from ame.codecs import DecodeError
from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.contracts.trigger.v1 import trigger_pb2
from ame.domain import RunSpec, RunState

__all__ = [
    "DataSetOutput",
    "DataSetSource",
    "DecodeError",
    "FiredSlot",
    "LaunchCommand",
    "PipelineStartRequest",
    "ProjectScheduleSet",
    "ProjectSource",
    "RetryRequest",
    "ScheduleDef",
    "StepRequest",
    "cancel_msg_id",
    "cron_msg_id",
    "encode_cancel",
    "encode_launch",
    "encode_pipeline_started",
    "encode_project_schedules",
    "encode_retry_requested",
    "encode_schedule_fired",
    "encode_step_requested",
    "launch_msg_id",
    "log_chunk_msg_id",
    "log_end_msg_id",
    "parse_cancel",
    "parse_launch",
    "parse_pipeline_started",
    "parse_project_schedules",
    "parse_retry_requested",
    "parse_schedule_fired",
    "parse_schedule_fired_slot",
    "parse_step_requested",
    "pipeline_msg_id",
    "pipeline_step_key",
    "relaunch",
    "retry_msg_id",
    "schedules_msg_id",
    "state_msg_id",
    "with_data_sets",
]


# Message ids ---------------------------------------------------------------------------------------------


def launch_msg_id(run_id: str, attempt: int) -> str:
    return f"launch:{run_id}:{attempt}"


def cancel_msg_id(run_id: str, attempt: int) -> str:
    return f"cancel:{run_id}:{attempt}"


def state_msg_id(run_id: str, attempt: int, state: RunState) -> str:
    return f"state:{run_id}:{attempt}:{state.value}"


def retry_msg_id(run_id: str, attempt: int) -> str:
    return f"retry:{run_id}:{attempt}"


def schedules_msg_id(project_id: str, generation: int) -> str:
    return f"schedules:{project_id}:{generation}"


def pipeline_msg_id(run_id: str) -> str:
    return f"pipeline:{run_id}"


def pipeline_step_key(parent_run_id: str, step: str) -> str:
    """The msg id of a step's request and the idempotency key of the step's run."""
    return f"pipeline:{parent_run_id}:{step}"


def cron_msg_id(schedule_id: str, slot_epoch_seconds: int) -> str:
    return f"cron:{schedule_id}:{slot_epoch_seconds}"


def log_chunk_msg_id(run_id: str, attempt: int, chunk: log_pb2.LogChunk) -> str:
    if chunk.HasField("end"):
        return f"log:{run_id}:{attempt}:end"
    return f"log:{run_id}:{attempt}:{chunk.lines[0].seq if chunk.lines else 0}"


def log_end_msg_id(run_id: str, attempt: int, producer: str) -> str:
    """An end published by someone other than the launcher (`producer`), e.g. the api for a run cancelled while
    queued: its own id, so that the launcher's end (with the attempt's last lines) is not dropped as a duplicate."""
    return f"log:{run_id}:{attempt}:end-{producer}"


# Launch commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectSource:
    """Where the run's project version lies in the object store (keys chosen by the api)."""

    manifest_key: str
    blob_prefix: str


@dataclass(frozen=True)
class DataSetSource:
    """A stored data set version the run reads, placed at `path` (relative to the run's directory)."""

    name: str
    path: str
    version_id: str
    manifest_key: str
    blob_prefix: str


@dataclass(frozen=True)
class DataSetOutput:
    """Where a producing run stores what it left at `path` (keys chosen by the api)."""

    name: str
    path: str
    blob_prefix: str
    manifest_prefix: str
    result_key: str
    # The data set's declared size; None: no limit (0 on the wire).
    max_bytes: int | None = None


@dataclass(frozen=True)
class LaunchCommand:
    run_id: str
    attempt: int
    organisation: str
    spec: RunSpec
    project_source: ProjectSource | None = None
    data_sets: tuple[DataSetSource, ...] = ()
    data_set_output: DataSetOutput | None = None


def encode_launch(
    run_id: str,
    attempt: int,
    organisation: str,
    spec: RunSpec,
    source: ProjectSource | None = None,
    *,
    data_sets: Sequence[DataSetSource] = (),
    data_set_output: DataSetOutput | None = None,
) -> bytes:
    pb = run_pb2.LaunchRun(
        run_id=run_id,
        attempt=attempt,
        organisation=organisation,
        spec=codecs.run_spec_to_pb(spec),
        requested_at=codecs.now_pb(),
    )
    if source is not None:
        pb.project_source.CopyFrom(
            run_pb2.ProjectSource(manifest_key=source.manifest_key, blob_prefix=source.blob_prefix)
        )
    pb.data_sets.extend(
        run_pb2.DataSetSource(
            name=d.name, path=d.path, version_id=d.version_id, manifest_key=d.manifest_key, blob_prefix=d.blob_prefix
        )
        for d in data_sets
    )
    if data_set_output is not None:
        o = data_set_output
        pb.data_set_output.CopyFrom(
            run_pb2.DataSetOutput(
                name=o.name,
                path=o.path,
                blob_prefix=o.blob_prefix,
                manifest_prefix=o.manifest_prefix,
                result_key=o.result_key,
                max_bytes=o.max_bytes or 0,
            )
        )
    return pb.SerializeToString()


def with_data_sets(data: bytes, data_sets: Sequence[DataSetSource]) -> bytes:
    """The launch command `data` with the data set versions it reads (once they are ready)."""
    pb = _launch_pb(data)
    del pb.data_sets[:]
    pb.data_sets.extend(
        run_pb2.DataSetSource(
            name=d.name, path=d.path, version_id=d.version_id, manifest_key=d.manifest_key, blob_prefix=d.blob_prefix
        )
        for d in data_sets
    )
    return pb.SerializeToString()


def _launch_pb(data: bytes) -> run_pb2.LaunchRun:
    pb = run_pb2.LaunchRun()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable launch command: {exc}") from exc
    if not pb.run_id or pb.attempt < 1:
        raise DecodeError("launch command without run id or attempt")
    return pb


def parse_launch(data: bytes) -> LaunchCommand:
    pb = _launch_pb(data)
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
        data_sets=tuple(
            DataSetSource(d.name, d.path, d.version_id, d.manifest_key, d.blob_prefix) for d in pb.data_sets
        ),
        data_set_output=(
            DataSetOutput(
                pb.data_set_output.name,
                pb.data_set_output.path,
                pb.data_set_output.blob_prefix,
                pb.data_set_output.manifest_prefix,
                pb.data_set_output.result_key,
                pb.data_set_output.max_bytes or None,
            )
            if pb.HasField("data_set_output")
            else None
        ),
    )


def relaunch(data: bytes, attempt: int) -> bytes:
    """The launch command `data` again, for another attempt of the same run (fields this code does not know are
    kept as they were)."""
    pb = _launch_pb(data)
    pb.attempt = attempt
    pb.requested_at.CopyFrom(codecs.now_pb())
    return pb.SerializeToString()


# Cancels -------------------------------------------------------------------------------------------------


def encode_cancel(run_id: str, attempt: int, reason: str) -> bytes:
    return run_pb2.RunCancelRequested(
        run_id=run_id, attempt=attempt, reason=reason, requested_at=codecs.now_pb()
    ).SerializeToString()


def parse_cancel(data: bytes) -> tuple[str, int, str]:
    """(run id, attempt (0: any), reason)."""
    pb = run_pb2.RunCancelRequested()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable cancel request: {exc}") from exc
    return pb.run_id, pb.attempt, pb.reason


# Schedule fires ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleDef:
    """One schedule as the api declares it to the scheduler (a task of the project's trigger version)."""

    task: str
    cron: str
    spec: RunSpec
    timezone: str = "UTC"
    catch_up: str = "none"
    overlap: str = "allow"
    jitter_seconds: float = 0.0
    enabled: bool = True


@dataclass(frozen=True)
class ProjectScheduleSet:
    organisation: str
    project: str
    project_version_id: str
    generation: int
    schedules: list[ScheduleDef]


@dataclass(frozen=True)
class FiredSlot:
    """What the api needs of a ScheduleFired: the run, its idempotency key, whose it is and the overlap rule."""

    spec: RunSpec
    key: str
    schedule_id: str
    organisation: str
    overlap: str
    slot: datetime


def encode_project_schedules(value: ProjectScheduleSet) -> bytes:
    return trigger_pb2.ProjectSchedules(
        organisation=value.organisation,
        project=value.project,
        project_version_id=value.project_version_id,
        generation=value.generation,
        schedules=[
            trigger_pb2.Schedule(
                organisation=value.organisation,
                project=value.project,
                task=d.task,
                cron=d.cron,
                enabled=d.enabled,
                spec=codecs.run_spec_to_pb(d.spec),
                timezone=d.timezone,
                catch_up=d.catch_up,
                overlap=d.overlap,
                jitter_seconds=d.jitter_seconds,
                project_version_id=value.project_version_id,
            )
            for d in value.schedules
        ],
    ).SerializeToString()


def parse_project_schedules(data: bytes) -> ProjectScheduleSet:
    pb = trigger_pb2.ProjectSchedules()
    try:
        pb.ParseFromString(data)
        schedules = [
            ScheduleDef(
                task=s.task,
                cron=s.cron,
                spec=codecs.run_spec_from_pb(s.spec),
                timezone=s.timezone or "UTC",
                catch_up=s.catch_up or "none",
                overlap=s.overlap or "allow",
                jitter_seconds=s.jitter_seconds,
                enabled=s.enabled,
            )
            for s in pb.schedules
        ]
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"undecodable project schedules: {exc}") from exc
    if not pb.organisation or not pb.project:
        raise DecodeError("project schedules without an organisation or project")
    return ProjectScheduleSet(pb.organisation, pb.project, pb.project_version_id, pb.generation, schedules)


def encode_schedule_fired(
    schedule_id: str,
    organisation: str,
    cron: str,
    spec: RunSpec,
    slot: datetime,
    *,
    overlap: str = "allow",
    timezone: str = "UTC",
    fired_at: datetime | None = None,
) -> bytes:
    return trigger_pb2.ScheduleFired(
        schedule=trigger_pb2.Schedule(
            id=schedule_id,
            organisation=organisation,
            project=spec.project,
            task=spec.task,
            cron=cron,
            enabled=True,
            spec=codecs.run_spec_to_pb(spec),
            overlap=overlap,
            timezone=timezone,
        ),
        slot=codecs.timestamp(slot),
        fired_at=codecs.timestamp(fired_at) if fired_at is not None else codecs.now_pb(),
    ).SerializeToString()


def parse_schedule_fired(data: bytes) -> tuple[RunSpec, str]:
    """The run a schedule slot asks for, and the idempotency key that makes it one run per slot (its msg id)."""
    fired = parse_schedule_fired_slot(data)
    return fired.spec, fired.key


def parse_schedule_fired_slot(data: bytes) -> FiredSlot:
    pb = trigger_pb2.ScheduleFired()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable schedule event: {exc}") from exc
    if not pb.schedule.id:
        raise DecodeError("schedule event without a schedule id")
    return FiredSlot(
        spec=codecs.run_spec_from_pb(pb.schedule.spec),
        key=cron_msg_id(pb.schedule.id, pb.slot.seconds),
        schedule_id=pb.schedule.id,
        organisation=pb.schedule.organisation,
        overlap=pb.schedule.overlap or "allow",
        slot=pb.slot.ToDatetime(tzinfo=UTC),
    )


# Retries -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryRequest:
    run_id: str
    attempt: int
    previous_state: RunState
    # The LaunchRun payload for `attempt`, published as is when the backoff is over.
    launch: bytes


def encode_retry_requested(run_id: str, attempt: int, previous_state: RunState, launch: bytes) -> bytes:
    pb = run_pb2.RunRetryRequested(
        run_id=run_id,
        attempt=attempt,
        previous_state=codecs.state_to_pb(previous_state),
        requested_at=codecs.now_pb(),
    )
    pb.launch.CopyFrom(_launch_pb(launch))
    return pb.SerializeToString()


def parse_retry_requested(data: bytes) -> RetryRequest:
    pb = run_pb2.RunRetryRequested()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable retry request: {exc}") from exc
    if not pb.run_id or pb.attempt < 2:
        raise DecodeError("retry request without run id or with an attempt below 2")
    if pb.launch.run_id != pb.run_id or pb.launch.attempt != pb.attempt:
        raise DecodeError("retry request whose launch command is for another run or attempt")
    try:
        previous = codecs.state_from_pb(pb.previous_state)
    except DecodeError:
        previous = RunState.FAILED  # a state this version does not know: it ended, not successfully
    return RetryRequest(
        run_id=pb.run_id, attempt=pb.attempt, previous_state=previous, launch=pb.launch.SerializeToString()
    )


# Pipelines ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineStartRequest:
    run_id: str
    organisation: str
    spec: RunSpec
    started_by: str


def encode_pipeline_started(run_id: str, organisation: str, spec: RunSpec, started_by: str) -> bytes:
    return run_pb2.PipelineStarted(
        run_id=run_id, organisation=organisation, spec=codecs.run_spec_to_pb(spec), started_by=started_by
    ).SerializeToString()


def parse_pipeline_started(data: bytes) -> PipelineStartRequest:
    try:
        pb = run_pb2.PipelineStarted.FromString(data)
    except Exception as exc:
        raise DecodeError(f"not a PipelineStarted: {exc}") from exc
    if not pb.run_id:
        raise DecodeError("PipelineStarted without a run id")
    return PipelineStartRequest(pb.run_id, pb.organisation, codecs.run_spec_from_pb(pb.spec), pb.started_by)


@dataclass(frozen=True)
class StepRequest:
    parent_run_id: str
    organisation: str
    step: str
    run_id: str
    spec: RunSpec
    started_by: str

    @property
    def key(self) -> str:
        return pipeline_step_key(self.parent_run_id, self.step)


def encode_step_requested(request: StepRequest) -> bytes:
    return run_pb2.PipelineStepRequested(
        parent_run_id=request.parent_run_id,
        organisation=request.organisation,
        step=request.step,
        run_id=request.run_id,
        spec=codecs.run_spec_to_pb(request.spec),
        started_by=request.started_by,
    ).SerializeToString()


def parse_step_requested(data: bytes) -> StepRequest:
    try:
        pb = run_pb2.PipelineStepRequested.FromString(data)
    except Exception as exc:
        raise DecodeError(f"not a PipelineStepRequested: {exc}") from exc
    if not pb.parent_run_id or not pb.run_id or not pb.step:
        raise DecodeError("PipelineStepRequested without its parent, step or run id")
    return StepRequest(
        pb.parent_run_id, pb.organisation, pb.step, pb.run_id, codecs.run_spec_from_pb(pb.spec), pb.started_by
    )
