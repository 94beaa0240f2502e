"""A remote pipeline on the kubernetes backend: each step is a pod, and a step's new and changed files reach the
steps after it (the step saves them, `saveChangedFiles`; the next pod's plan lays them over the version)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import PIPELINE_STEP_LABEL, PipelineStage, PipelineStep, RunSpec
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.test_pods import finished
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

# The first step writes a new file, changes one of the version's and puts a file where the version has a
# directory; the second prints what it finds.
_FIRST = "echo made-by-first > made.txt && echo changed > greeting.txt && rm -r conf && echo a-file > conf"
_SECOND = "cat made.txt greeting.txt conf untouched.txt; ls conf/a.txt 2>/dev/null || echo no-conf-dir"


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
