"""The models' bus messages (api <-> scheduler), each with its encoder, decoder and `Nats-Msg-Id`, defined once
here as `ame.bus_messages` defines the others:

* `model:<model version>:requested`  ModelTrainRequested (api -> scheduler): a training was asked for
* `model:<model version>:train` / `model:<model version>:validate`  ModelRunRequested (scheduler -> api): start
  that run; the same string is the run's idempotency key, so a repeat starts nothing new
"""

from __future__ import annotations

from dataclasses import dataclass

from ame import codecs
from ame.codecs import DecodeError, from_timestamp, timestamp

__all__ = ["DecodeError", "RunRequest", "TrainRequest"]
from ame.contracts.model.v1 import model_pb2
from ame.domain import RunSpec
from ame.domain.ml_models import ModelSummary, ModelVersion, ModelVersionState

TRAIN = "train"
VALIDATE = "validate"
_STATES = frozenset(state.value for state in ModelVersionState)


def requested_msg_id(model_version_id: str) -> str:
    return f"model:{model_version_id}:requested"


def run_key(model_version_id: str, stage: str) -> str:
    """The msg id of a ModelRunRequested and the idempotency key of the run it starts."""
    return f"model:{model_version_id}:{stage}"


@dataclass(frozen=True)
class TrainRequest:
    model_version_id: str
    organisation: str
    project: str
    model: str
    number: int
    training: RunSpec
    validation: RunSpec | None


@dataclass(frozen=True)
class RunRequest:
    model_version_id: str
    organisation: str
    stage: str
    run_id: str
    key: str
    spec: RunSpec


def encode_train_requested(value: TrainRequest) -> bytes:
    pb = model_pb2.ModelTrainRequested(
        model_version_id=value.model_version_id,
        organisation=value.organisation,
        project=value.project,
        model=value.model,
        number=value.number,
        training=codecs.run_spec_to_pb(value.training),
        has_validation=value.validation is not None,
    )
    if value.validation is not None:
        pb.validation.CopyFrom(codecs.run_spec_to_pb(value.validation))
    return pb.SerializeToString()


def parse_train_requested(data: bytes) -> TrainRequest:
    pb = model_pb2.ModelTrainRequested()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable ModelTrainRequested: {exc}") from None
    if not pb.model_version_id or not pb.HasField("training"):
        raise DecodeError("ModelTrainRequested without a model version or a training run")
    return TrainRequest(
        model_version_id=pb.model_version_id,
        organisation=pb.organisation,
        project=pb.project,
        model=pb.model,
        number=pb.number,
        training=codecs.run_spec_from_pb(pb.training),
        validation=codecs.run_spec_from_pb(pb.validation) if pb.has_validation else None,
    )


def encode_run_requested(value: RunRequest) -> bytes:
    return model_pb2.ModelRunRequested(
        model_version_id=value.model_version_id,
        organisation=value.organisation,
        stage=value.stage,
        run_id=value.run_id,
        key=value.key,
        spec=codecs.run_spec_to_pb(value.spec),
    ).SerializeToString()


def parse_run_requested(data: bytes) -> RunRequest:
    pb = model_pb2.ModelRunRequested()
    try:
        pb.ParseFromString(data)
    except Exception as exc:
        raise DecodeError(f"undecodable ModelRunRequested: {exc}") from None
    if pb.stage not in (TRAIN, VALIDATE) or not pb.run_id or not pb.key:
        raise DecodeError(f"ModelRunRequested with stage {pb.stage!r}, run id {pb.run_id!r}, key {pb.key!r}")
    return RunRequest(
        model_version_id=pb.model_version_id,
        organisation=pb.organisation,
        stage=pb.stage,
        run_id=pb.run_id,
        key=pb.key,
        spec=codecs.run_spec_from_pb(pb.spec),
    )


def version_to_pb(value: ModelVersion) -> model_pb2.ModelVersion:
    return model_pb2.ModelVersion(
        id=value.id,
        organisation=value.organisation,
        project=value.project,
        model=value.model,
        number=value.number,
        project_version_id=value.project_version_id,
        training_run_id=value.training_run_id,
        validation_run_id=value.validation_run_id,
        state=value.state.value,
        reason=value.reason,
        created_at=timestamp(value.created_at),
        mlflow_version=value.mlflow_version,
        has_validation=value.has_validation,
    )


def version_from_pb(pb: model_pb2.ModelVersion) -> ModelVersion:
    return ModelVersion(
        id=pb.id,
        organisation=pb.organisation,
        project=pb.project,
        model=pb.model,
        number=max(pb.number, 1),
        project_version_id=pb.project_version_id,
        training_run_id=pb.training_run_id,
        validation_run_id=pb.validation_run_id,
        state=ModelVersionState(pb.state) if pb.state in _STATES else ModelVersionState.TRAINING,
        reason=pb.reason,
        created_at=from_timestamp(pb.created_at),
        mlflow_version=pb.mlflow_version,
        has_validation=pb.has_validation,
    )


def summary_to_pb(value: ModelSummary) -> model_pb2.ModelSummary:
    pb = model_pb2.ModelSummary(project=value.project, model=value.model)
    if value.latest is not None:
        pb.latest.CopyFrom(version_to_pb(value.latest))
    if value.latest_validated is not None:
        pb.latest_validated.CopyFrom(version_to_pb(value.latest_validated))
    return pb


def summary_from_pb(pb: model_pb2.ModelSummary) -> ModelSummary:
    return ModelSummary(
        project=pb.project,
        model=pb.model,
        latest=version_from_pb(pb.latest) if pb.HasField("latest") else None,
        latest_validated=version_from_pb(pb.latest_validated) if pb.HasField("latest_validated") else None,
    )
