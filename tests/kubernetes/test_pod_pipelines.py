"""A remote pipeline on the kubernetes backend: each step is a pod, and a step's new and changed files reach the
steps after it (the step saves them, `saveChangedFiles`; the next pod's plan lays them over the version)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ame import codecs
from ame.bus_messages import LaunchCommand
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import PIPELINE_PARENT_LABEL, PIPELINE_STEP_LABEL, FileLayer, PipelineStage, PipelineStep, RunSpec
from ame.domain.artifacts import Artifact, artifact_key, index_key
from ame.domain.runs import ArtifactsSpec
from ame_launcher.kubernetes.backend import KubernetesBackend, PlanError
from ame_launcher.kubernetes.settings import KubernetesSettings
from ame_launcher.settings import LauncherSettings
from ame_platform.storage import StorageSettings
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.test_pods import finished
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

# The first step writes a new file, changes one of the version's and puts a file where the version has a
# directory; the second prints what it finds.
# (touching a file without changing its bytes does not save it).
_FIRST = (
    "echo made-by-first > made.txt && echo changed > greeting.txt && rm -r conf && echo a-file > conf"
    " && touch untouched.txt"
)
_SECOND = "cat made.txt greeting.txt conf untouched.txt; ls conf/a.txt 2>/dev/null || echo no-conf-dir"


@pytest.mark.nats
@pytest.mark.postgres
async def test_a_pipelines_steps_run_as_pods_and_the_second_gets_the_files_the_first_wrote(
    stack: Stack, client: Grpc, cluster: Cluster, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    (root / "conf").mkdir(parents=True)
    (root / "ame.yml").write_text("project: pipes\ntasks:\n  - name: main\n    executor: !custom\n      command: ls\n")
    (root / "greeting.txt").write_text("from-the-version\n")
    (root / "untouched.txt").write_text("untouched\n")
    (root / "conf" / "a.txt").write_text("in-a-directory\n")
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="pipes")).version.id

    def step(name: str, command: str) -> PipelineStage:
        spec = RunSpec(project="pipes", task=name, command=command, project_version_id=version)
        return PipelineStage(steps=[PipelineStep(name=name, spec=spec)])

    pipeline = RunSpec(
        project="pipes", task="main", project_version_id=version, pipeline=[step("make", _FIRST), step("use", _SECOND)]
    )
    request = ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(pipeline))
    parent = (await client.stub.SubmitRun(request)).run
    ended = await finished(client, parent.id, timeout=90.0)
    children = (await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(parent_run_id=parent.id, page_size=10))).runs
    by_step = {child.spec.labels[PIPELINE_STEP_LABEL]: child for child in children}
    for name, child in by_step.items():
        if child.state != run_pb2.RUN_STATE_SUCCEEDED:
            followed = await client.follow(child.id)
            pytest.fail(f"step {name} ended {child.state} ({child.reason}): {followed.lines}")
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    assert sorted(by_step) == ["make", "use"]
    # The later layer wins a path; a file replaces the version's directory; what no step touched stays.
    printed = [t for _, s, t in (await client.follow(by_step["use"].id)).lines if s == "stdout"]
    assert printed == ["made-by-first", "changed", "a-file", "untouched", "no-conf-dir"]
    # Only what the first step made or changed was saved: its index lists exactly those.
    listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=by_step["make"].id))
    assert sorted(a.path for a in listed.artifacts) == ["conf", "greeting.txt", "made.txt"]
    if cluster.kubelet is not None:
        assert sorted(cluster.kubelet.started) == sorted(f"ame-{child.id}-1" for child in children)


async def test_a_steps_plan_lays_the_earlier_steps_files_over_in_order_and_a_missing_one_fails_it(
    s3_settings: StorageSettings, tmp_path: Path
) -> None:
    settings = LauncherSettings(
        work_dir=tmp_path / "launcher",
        storage=s3_settings,
        backend="kubernetes",
        kubernetes=KubernetesSettings(namespace="ame-runs"),
    )
    backend = KubernetesBackend(settings)
    store = await backend._versions.store()
    layers: list[FileLayer] = []
    for run_id, files in [("r1", {"model": b"1", "out/a": b"a", "keep": b"k"}), ("r2", {"model": b"2", "out": b"f"})]:
        saved = []
        for path, data in files.items():
            await store.put_bytes(artifact_key("default", run_id, 1, path), data)
            saved.append(Artifact(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), attempt=1))
        await store.put_bytes(index_key("default", run_id, 1), codecs.artifact_index_to_bytes(run_id, 1, saved))
        layers.append(FileLayer(run_id=run_id, attempt=1))
    step = RunSpec(
        command="ls",
        layers=layers,
        artifacts=ArtifactsSpec(save_changed_files=True),
        labels={PIPELINE_PARENT_LABEL: "p"},
    )
    run_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    try:
        plan, _ = await backend._plan(LaunchCommand(run_id, 1, "default", step))
        placed = {f["path"]: unquote(urlsplit(f["url"]).path) for f in plan["files"]}
        assert sorted(placed) == ["keep", "model", "out"]
        assert placed["model"].endswith(artifact_key("default", "r2", 1, "model"))
        assert placed["out"].endswith(artifact_key("default", "r2", 1, "out"))
        assert placed["keep"].endswith(artifact_key("default", "r1", 1, "keep"))
        assert plan["task"]["save_changed_files"] is True
        assert plan["artifacts"] is not None  # the upload form, though the step declares no artifact paths
        missing = step.model_copy(update={"layers": [*layers, FileLayer(run_id="r3", attempt=2)]})
        with pytest.raises(PlanError, match=r"the saved files of earlier step run r3 \(attempt 2\)"):
            await backend._plan(LaunchCommand(run_id, 1, "default", missing))
    finally:
        await backend.close()
