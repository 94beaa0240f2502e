"""What a pod cannot honour fails the run at once with the reason, instead of running it without: data sets, a data
set's production, a pipeline's parent (never launched: its steps are), executors whose environment the pod does
not build. Another run's artifacts (`input_run_id`), a pipeline step's layers and saving changed files it does."""

from __future__ import annotations

import pytest

from ame.bus_messages import DataSetOutput, DataSetSource, LaunchCommand, ProjectSource
from ame.contracts.run.v1 import run_pb2
from ame.domain import RunSpec
from ame.domain.resources import Resources
from ame.domain.runs import ArtifactsSpec, EnvVar, ExecutorRef, FileLayer, PipelineStage, PipelineStep
from ame_launcher.kubernetes import manifests
from ame_launcher.kubernetes.backend import unsupported
from ame_launcher.kubernetes.settings import KubernetesSettings
from tests.integration.clients import Grpc
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.test_pods import finished
from tests.stack_fixtures import Stack

RUN_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
_SOURCE = DataSetSource("images", "data/images", "v1", "org/ds/images/v1.json", "org/ds/blobs/")
_STEP = PipelineStep(name="train", spec=RunSpec(command="ls"))
_OUTPUT = DataSetOutput("images", "out", "org/ds/blobs/", "org/ds/images/", "org/ds/images/result.json")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            LaunchCommand(RUN_ID, 1, "default", RunSpec(command="ls"), data_sets=(_SOURCE,)),
            "data sets are not supported on the kubernetes backend yet: run with the local backend",
        ),
        (
            LaunchCommand(RUN_ID, 1, "default", RunSpec(command="ls"), data_set_output=_OUTPUT),
            "producing a data set is not supported on the kubernetes backend yet: run with the local backend",
        ),
        (
            LaunchCommand(RUN_ID, 1, "default", RunSpec(pipeline=[PipelineStage(steps=[_STEP])])),
            "a pipeline run is not supported on the kubernetes backend yet: run with the local backend",
        ),
        (
            LaunchCommand(RUN_ID, 1, "default", RunSpec(command="ls", executor=ExecutorRef(kind="poetry"))),
            "the poetry executor is not supported on the kubernetes backend yet (only pip and custom): "
            "run with the local backend",
        ),
        (
            LaunchCommand(
                RUN_ID, 1, "default", RunSpec(command="ls", resources=Resources(gpu_memory_bytes=24 * 2**30))
            ),
            "vram and gpuModel say what kind of GPU the task needs, and it asks for none: add gpus (e.g. gpus: 1)",
        ),
    ],
    ids=["data-sets", "data-set-output", "pipeline-parent", "poetry", "vram-without-gpus"],
)
def test_a_setting_the_pod_cannot_honour_is_refused_with_the_reason(command: LaunchCommand, reason: str) -> None:
    assert unsupported(command) == reason


@pytest.mark.parametrize("kind", ["pip", "custom"])
def test_the_executors_the_pod_builds_are_accepted(kind: str) -> None:
    assert (
        unsupported(LaunchCommand(RUN_ID, 1, "default", RunSpec(command="ls", executor=ExecutorRef(kind=kind)))) is None
    )


def test_a_pipeline_steps_layers_and_changed_files_are_accepted() -> None:
    spec = RunSpec(
        command="ls", layers=[FileLayer(run_id="r-step", attempt=1)], artifacts=ArtifactsSpec(save_changed_files=True)
    )
    assert unsupported(LaunchCommand(RUN_ID, 1, "default", spec)) is None


def test_the_pod_annotation_carries_every_field_an_adopter_needs() -> None:
    command = LaunchCommand(
        RUN_ID,
        2,
        "acme",
        RunSpec(command="ls"),
        ProjectSource("org/v.json", "org/blobs/"),
        data_sets=(_SOURCE,),
        data_set_output=_OUTPUT,
    )
    assert manifests.decode_command(manifests.encode_command(command)) == command


def test_the_launcher_environment_reaches_the_pod_unless_the_run_sets_it() -> None:
    spec = RunSpec(command="ls", environment=[EnvVar(key="MLFLOW_TRACKING_URI", value="http://mine:5000")])
    pod = manifests.pod_manifest(
        LaunchCommand(RUN_ID, 1, "default", spec),
        KubernetesSettings(namespace="ame-runs"),
        secret_keys=[],
        gpu_model=None,
        grace_seconds=5,
        launcher_env={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AME_GRPC_TARGET": "api:50051"},
    )
    env = [(e["name"], e.get("value")) for e in pod["spec"]["containers"][0]["env"]]
    assert ("AME_GRPC_TARGET", "api:50051") in env
    assert [v for k, v in env if k == "MLFLOW_TRACKING_URI"] == ["http://mine:5000"]


@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_the_pod_cannot_honour_fails_at_once_with_the_reason_and_makes_no_pod(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    run = await client.submit("echo never", executor=run_pb2.Executor(kind="poetry"))
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED, ended
    assert ended.reason.startswith("the poetry executor is not supported on the kubernetes backend yet"), ended.reason
    followed = await client.follow(run.id)
    assert f"ame: {ended.reason}" in [t for _, s, t in followed.lines if s == "system"]
    if cluster.kubelet is not None:
        assert f"ame-{run.id}-1" not in cluster.kubelet.pods
        assert cluster.kubelet.started == []


@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.asyncio(loop_scope="session")
async def test_a_pod_gets_the_artifacts_of_its_input_run(stack: Stack, client: Grpc, cluster: Cluster) -> None:
    trained = await client.submit(
        "mkdir -p out && echo weights-1 > out/model.txt", artifacts=run_pb2.Artifacts(paths=["out"])
    )
    assert (await finished(client, trained.id)).state == run_pb2.RUN_STATE_SUCCEEDED
    validated = await client.submit("cat out/model.txt", input_run_id=trained.id)
    ended = await finished(client, validated.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    followed = await client.follow(validated.id)
    assert [t for _, s, t in followed.lines if s == "stdout"] == ["weights-1"]
