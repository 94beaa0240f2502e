"""Runs as pods: a run's whole life on the kubernetes backend, against the emulator and the test kubelet."""

from __future__ import annotations

import hashlib
import json
import secrets
from base64 import b64decode
from pathlib import Path

import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.run_specs import run_spec_for_task
from ame.spec import load_project, resolve_task
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.kubernetes.conftest import Cluster
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_TERMINAL = {
    run_pb2.RUN_STATE_SUCCEEDED,
    run_pb2.RUN_STATE_FAILED,
    run_pb2.RUN_STATE_CANCELLED,
    run_pb2.RUN_STATE_TIMED_OUT,
    run_pb2.RUN_STATE_LOST,
}


async def finished(client: Grpc, run_id: str, timeout: float = 30.0) -> run_pb2.Run:
    async def ended() -> run_pb2.Run | None:
        run = await client.get(run_id)
        return run if run.state in _TERMINAL else None

    result = await wait_until(ended, timeout=timeout, interval=0.1, message=f"run {run_id} to end")
    assert isinstance(result, run_pb2.Run)
    return result


async def test_a_run_is_one_pod_with_its_output_streams_and_exit_code(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    run = await client.submit("echo hello; echo oops >&2; exit 3")
    ended = await finished(client, run.id)
    followed = await client.follow(run.id)
    assert ended.state == run_pb2.RUN_STATE_FAILED, ended
    # stdout and stderr are two pipes read by two threads in the pod: the order within a stream is kept, the
    # interleaving across the two is whichever thread read first.
    streams = [(s, t) for _, s, t in followed.lines if s != "system"]
    assert sorted(streams) == [("stderr", "oops"), ("stdout", "hello")]
    assert followed.end is not None
    assert followed.end.end.exit_code == 3
    if cluster.kubelet is not None:
        assert cluster.kubelet.started == [f"ame-{run.id}-1"]


async def test_a_pod_gets_its_project_files_and_saves_artifacts_through_its_upload_form(
    stack: Stack, client: Grpc, cluster: Cluster, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "ame.yml").write_text(
        "project: pods\n"
        "tasks:\n"
        "  - name: train\n"
        "    executor: !custom\n"
        "      command: python3 train.py\n"
        "    artifacts:\n"
        "      paths: [out]\n"
    )
    (root / "train.py").write_text(
        "from pathlib import Path\n"
        "Path('out/sub').mkdir(parents=True)\n"
        "Path('out/model.bin').write_bytes(bytes(range(256)) * 64)\n"
        "Path('out/sub/metrics.json').write_text(Path('params.json').read_text())\n"
        "print('trained')\n"
    )
    (root / "params.json").write_text('{"lr": 0.1}')
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="pods")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "train"), project="pods", project_version_id=version)
    response = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    ended = await finished(client, response.run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    listed = await client.stub.ListRunArtifacts(ame_service_pb2.ListRunArtifactsRequest(run_id=ended.id))
    model = bytes(range(256)) * 64
    assert {a.path: (a.size, a.sha256) for a in listed.artifacts} == {
        "out/model.bin": (len(model), hashlib.sha256(model).hexdigest()),
        "out/sub/metrics.json": (11, hashlib.sha256(b'{"lr": 0.1}').hexdigest()),
    }
    followed = await client.follow(ended.id)
    assert "ame: saved 2 artifact(s)" in [t for _, s, t in followed.lines if s == "system"]


async def test_a_plan_too_big_for_the_secret_travels_through_the_object_store(
    stack: Stack, client: Grpc, cluster: Cluster, tmp_path: Path
) -> None:
    """A version of thousands of files (or large task arguments) makes a plan over a Secret's 1 MiB: past
    `plan_inline_max` the Secret holds a URL to it, and the pod runs the same."""
    backends = [launcher._backend for launcher in stack.launchers]
    saved = [b.kube for b in backends]  # type: ignore[attr-defined]
    for backend in backends:
        backend.kube = backend.kube.model_copy(update={"plan_inline_max": 0})  # type: ignore[attr-defined]
    try:
        root = tmp_path / "project"
        root.mkdir()
        (root / "ame.yml").write_text(
            "project: bigplan\ntasks:\n  - name: show\n    executor: !custom\n      command: cat greeting.txt\n"
        )
        (root / "greeting.txt").write_text("hello from a plan in the object store\n")
        version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="bigplan")).version.id
        task = resolve_task(load_project(root), "show")
        spec = run_spec_for_task(task, project="bigplan", project_version_id=version).model_copy(
            update={"args": {"blob": "x" * 1000}}
        )
        response = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
        ended = await finished(client, response.run.id)
        assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
        followed = await client.follow(ended.id)
        assert [t for _, s, t in followed.lines if s == "stdout"] == ["hello from a plan in the object store"]
        # The plan went to the object store, under the run's prefix.
        store = await backends[0]._versions.store()  # type: ignore[attr-defined]
        stored_plan = json.loads(await store.get_bytes(f"orgs/default/runs/{ended.id}/pod-plans/1.json"))
        assert stored_plan["task"]["args"] == {"blob": "x" * 1000}
        assert [f["path"] for f in stored_plan["files"]] == ["ame.yml", "greeting.txt"]
        assert cluster.km is not None
        secrets = [
            obj.raw
            for (res, _, name), obj in cluster.km.objects.items()
            if res.plural == "secrets" and name == f"ame-{ended.id}-1-run"
        ]
        # The pod's Secret (kept until the GC delay, 5 minutes) holds only the URL.
        (stored,) = secrets
        text = stored["stringData"]["plan.json"] if "stringData" in stored else b64decode(stored["data"]["plan.json"])
        assert list(json.loads(text)) == ["plan_url"], text
    finally:
        for backend, kube in zip(backends, saved, strict=True):
            backend.kube = kube  # type: ignore[attr-defined]


async def test_a_pods_secret_values_are_masked_in_its_output_as_locally(
    stack: Stack, client: Grpc, cluster: Cluster
) -> None:
    value = f"pod-secret-{secrets.token_hex(8)}"
    await client.stub.PutSecret(ame_service_pb2.PutSecretRequest(name="podtoken", value=value))
    run = await client.submit(
        'echo "token: $TOKEN"; echo "again $TOKEN" >&2',
        secrets=[run_pb2.SecretRef(key="podtoken", inject_as="TOKEN")],
    )
    ended = await finished(client, run.id)
    assert ended.state == run_pb2.RUN_STATE_SUCCEEDED, ended
    followed = await client.follow(run.id)
    assert sorted(t for _, s, t in followed.lines if s != "system") == ["again ***", "token: ***"]
    assert not any(value in t for _, _, t in followed.lines)
