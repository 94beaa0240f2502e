"""Data sets on the in-process stack (one api, two launchers): consumers submitted at once share one production."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.run_specs import run_spec_for_task
from ame.spec import load_project, resolve_task
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.stack_fixtures import Stack

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

AME_YML = """\
project: ds
dataSets:
  - name: words
    path: data/words
    task:
      name: fetch-words
      executor: !custom
        command: python fetch.py
tasks:
  - name: read
    executor: !custom
      command: python read.py
    dataSets: [words]
"""

FETCH_PY = """\
import os, pathlib
out = pathlib.Path("data/words")
out.mkdir(parents=True)
(out / "w.txt").write_text(os.environ["AME_RUN_ID"])
"""

READ_PY = """\
import os
print("words from", open("data/words/w.txt").read(), os.stat("data/words/w.txt").st_nlink > 1)
"""


async def test_consumers_submitted_at_once_share_one_production(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "ame.yml").write_text(AME_YML)
    (root / "fetch.py").write_text(FETCH_PY)
    (root / "read.py").write_text(READ_PY)
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="ds")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "read"), project="ds", project_version_id=version)
    request = ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec))

    submitted = await asyncio.gather(*(client.stub.SubmitRun(request) for _ in range(6)))
    followed = await asyncio.gather(*(client.follow(r.run.id) for r in submitted))
    outputs: set[str] = set()
    for result in followed:
        assert result.end is not None and result.end.end.exit_code == 0, result
        outputs.update(text for _, stream, text in result.lines if stream == "stdout")
    # One producing run wrote the file every consumer read, through a hard link from its launcher's cache.
    assert len(outputs) == 1, outputs
    (line,) = outputs
    assert line.startswith("words from ") and line.endswith(" True"), line

    listed = await client.stub.ListDataSets(ame_service_pb2.ListDataSetsRequest(project="ds"))
    (words,) = listed.data_sets
    assert (words.status, words.file_count, words.generation) == ("ready", 1, 1)
    assert line == f"words from {words.run_id} True"
    runs = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="ds", task="fetch-words"))
    assert [r.id for r in runs.runs] == [words.run_id]


async def test_a_task_reads_another_projects_data_set(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "ame.yml").write_text(AME_YML)
    (source / "fetch.py").write_text(FETCH_PY)
    (source / "read.py").write_text(READ_PY)
    await sdk_push(stack.grpc_target, source, tmp_path / "push-cache", project="ds")
    user = tmp_path / "user"
    user.mkdir()
    (user / "ame.yml").write_text(
        "project: user\ntasks:\n  - name: read\n    executor: !custom\n      command: python read.py\n"
        "    dataSets:\n      - ref: {name: words, project: ds}\n"
    )
    (user / "read.py").write_text(READ_PY)
    version = (await sdk_push(stack.grpc_target, user, tmp_path / "push-cache", project="user")).version.id
    spec = run_spec_for_task(resolve_task(load_project(user), "read"), project="user", project_version_id=version)
    submitted = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    followed = await client.follow(submitted.run.id)
    assert followed.end is not None and followed.end.end.exit_code == 0, followed
    (words,) = (await client.stub.ListDataSets(ame_service_pb2.ListDataSetsRequest(project="ds"))).data_sets
    assert [t for _, s, t in followed.lines if s == "stdout"] == [f"words from {words.run_id} True"]

    # A data set no pushed version declares is refused at submit, naming it.
    spec = spec.model_copy(update={"data_sets": [spec.data_sets[0].model_copy(update={"name": "nope"})]})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "data set 'nope' is not declared" in str(refused.value.details())
