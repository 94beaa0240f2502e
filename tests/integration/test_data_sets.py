"""Data sets on the in-process stack (one api, two launchers): consumers submitted at once share one production."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from ame import codecs
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import RunSpec, TriggerKind
from ame.domain.ids import new_run_id
from ame.run_specs import run_spec_for_task
from ame.sdk import AmeError
from ame.spec import load_project, resolve_task, templates_from
from ame_api.repositories import data_sets as repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories.data_sets import Definition
from ame_server.server import migrate_all
from tests.integration.clients import Grpc
from tests.integration.project_support import sdk_push
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

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


CYCLE_YML = """\
project: cyc
dataSets:
  - name: a
    path: a
    task:
      name: make-a
      executor: !custom
        command: python -c pass
      dataSets: [b]
  - name: b
    path: b
    task:
      name: make-b
      executor: !custom
        command: python -c pass
      dataSets: [a]
tasks:
  - name: read
    executor: !custom
      command: python -c pass
    dataSets: [a]
"""


async def test_a_data_set_cycle_is_refused_at_push_or_submit(stack: Stack, client: Grpc, tmp_path: Path) -> None:
    root = tmp_path / "cyc"
    root.mkdir()
    # A producer reading its own data set: the push says where.
    (root / "ame.yml").write_text(CYCLE_YML.replace("dataSets: [b]", "dataSets: [a]"))
    with pytest.raises(AmeError) as refused:
        await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="cyc")
    assert re.search(r"ame\.yml:9:\d+: data set 'a' is read by its own producing task", str(refused.value)), refused

    # a's producer reads b, b's reads a: found when a consumer's submit produces them, refused with the cycle.
    (root / "ame.yml").write_text(CYCLE_YML)
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="cyc")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "read"), project="cyc", project_version_id=version)
    with pytest.raises(grpc.aio.AioRpcError) as cycle:
        await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    assert cycle.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cycle.value.details() == "data set cycle: a -> b -> a"

    # Across projects: cyc's c reads other's d, whose producer reads c.
    other = tmp_path / "other"
    other.mkdir()
    (other / "ame.yml").write_text(
        "project: other\ndataSets:\n  - name: d\n    path: d\n    task:\n      name: make-d\n"
        "      executor: !custom\n        command: python -c pass\n      dataSets:\n"
        "        - ref: {name: c, project: cyc}\n"
    )
    await sdk_push(stack.grpc_target, other, tmp_path / "push-cache", project="other")
    (root / "ame.yml").write_text(
        CYCLE_YML.replace("name: a\n", "name: c\n")
        .replace("dataSets: [b]", "dataSets:\n        - ref: {name: d, project: other}")
        .replace("      dataSets: [a]\ntasks", "tasks")
        .replace("    dataSets: [a]\n", "    dataSets: [c]\n")
    )
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="cyc")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "read"), project="cyc", project_version_id=version)
    with pytest.raises(grpc.aio.AioRpcError) as cycle:
        await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    assert cycle.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cycle.value.details() == "data set cycle: c -> other:d -> c"


GPU_YML = """\
project: gpu
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
      command: python -c pass
    resources:
      nvidia.com/gpu: 2
    dataSets: [words]
"""

# Waits for the test's go-ahead file (no sleeps in the test: it writes the file when ready).
GATED_FETCH_PY = """\
import pathlib, sys, time
deadline = time.monotonic() + 60
while not pathlib.Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
pathlib.Path("data/words").mkdir(parents=True)
pathlib.Path("data/words/w.txt").write_text("w")
"""


async def test_a_waiter_its_limits_no_longer_admit_fails_when_the_data_set_is_ready(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = tmp_path / "gpu"
    root.mkdir()
    go = tmp_path / "go"
    (root / "ame.yml").write_text(GPU_YML.replace("python fetch.py", f"python fetch.py {go}"))
    (root / "fetch.py").write_text(GATED_FETCH_PY)
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="gpu")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "read"), project="gpu", project_version_id=version)
    request = ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec))
    waiting = (await client.stub.SubmitRun(request)).run
    assert waiting.reason == "waiting for data set 'words'", waiting

    limited = await rest.put("/v1/orgs/default/limits", json={"max_gpus": 1})
    assert limited.status_code == 200, limited.text
    # A consumer the limits refuse is refused at submit, although its data set is not ready yet.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.SubmitRun(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "asks for 2 GPUs; organisation default may use at most 1" in str(refused.value.details())

    go.write_text("")

    # The data set becomes ready and the waiter the limits now refuse fails with the reason (not a ready update
    # rolled back and redelivered for ever).
    async def ended() -> ame_service_pb2.GetRunResponse | None:
        got = await client.stub.GetRun(ame_service_pb2.GetRunRequest(run_id=waiting.id))
        return got if got.run.state == run_pb2.RUN_STATE_FAILED else None

    failed = await wait_until(ended, timeout=60, interval=0.1, message="the refused waiter to fail")
    assert "asks for 2 GPUs; organisation default may use at most 1" in failed.run.reason, failed
    (words,) = (await client.stub.ListDataSets(ame_service_pb2.ListDataSetsRequest(project="gpu"))).data_sets
    assert (words.status, words.file_count) == ("ready", 1)


async def test_a_run_waiting_for_two_data_sets_ready_at_once_is_released(pg_dsn: str) -> None:
    await migrate_all(pg_dsn)
    first, second, observer = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        run_id = new_run_id()
        consumer = RunSpec(project="two", task="read", command="true")
        await runs_repo.create_run(
            first,
            run_id=run_id,
            organisation="default",
            spec=consumer,
            trigger=TriggerKind.API,
            parent_run_id="",
            idempotency_key=None,
            launch_command=b"x",
        )
        ids = []
        for name in ("a", "b"):
            producer = RunSpec(project="two", task=f"make-{name}", command="true")
            definition = Definition("two", name, name, name * 64, "v" * 64, producer)
            ids.append((await repo.ensure(first, organisation="default", definition=definition)).id)
        await repo.add_waiters(first, run_id, [("a", ids[0], True), ("b", ids[1], True)])

        # Both productions end at once, each in its own transaction: the first still sees the run waiting for
        # the other; the second must then see the first's update (it waits for the first on the run's lock) and
        # release the run.
        one = first.transaction()
        await one.start()
        released_by_first = await repo.stop_waiting(first, ids[0])
        other = asyncio.create_task(_stop_waiting_in_transaction(second, ids[1]))
        pid = second.get_server_pid()

        async def second_blocked_or_done() -> bool:
            waits = await observer.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
            return other.done() or waits == "Lock"

        await wait_until(second_blocked_or_done, timeout=10, message="the second transaction to block or end")
        await one.commit()
        released_by_second = await other
        assert released_by_first + released_by_second == [run_id]
    finally:
        for conn in (first, second, observer):
            await conn.close()


async def _stop_waiting_in_transaction(conn: asyncpg.Connection, data_set_id: str) -> list[str]:
    async with conn.transaction():
        return await repo.stop_waiting(conn, data_set_id)


async def test_a_producer_built_on_another_projects_template_is_pushed_and_produces(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ame.yml").write_text(
        "project: shared\ntemplates:\n  - name: fetcher\n    executor: !custom\n      command: python fetch.py\n"
    )
    await sdk_push(stack.grpc_target, shared, tmp_path / "push-cache", project="shared")
    root = tmp_path / "user"
    root.mkdir()
    (root / "ame.yml").write_text(
        AME_YML.replace("project: ds", "project: tpl").replace(
            "      executor: !custom\n        command: python fetch.py\n", "      fromTemplate: shared.fetcher\n"
        )
    )
    (root / "fetch.py").write_text(FETCH_PY)
    (root / "read.py").write_text(READ_PY)
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="tpl")).version.id
    templates = templates_from([shared])
    task = resolve_task(load_project(root, external_templates=templates), "read", external_templates=templates)
    spec = run_spec_for_task(task, project="tpl", project_version_id=version)
    submitted = await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))
    followed = await client.follow(submitted.run.id)
    assert followed.end is not None and followed.end.end.exit_code == 0, followed
    (words,) = (await client.stub.ListDataSets(ame_service_pb2.ListDataSetsRequest(project="tpl"))).data_sets
    assert [t for _, s, t in followed.lines if s == "stdout"] == [f"words from {words.run_id} True"]


async def test_a_production_over_its_declared_size_fails_its_consumer_with_the_reason(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "ame.yml").write_text(
        AME_YML.replace("project: ds", "project: big").replace("    task:", "    size: 1k\n    task:", 1)
    )
    (root / "fetch.py").write_text(FETCH_PY.replace('os.environ["AME_RUN_ID"]', '"w" * 1500'))
    (root / "read.py").write_text(READ_PY)
    version = (await sdk_push(stack.grpc_target, root, tmp_path / "push-cache", project="big")).version.id
    spec = run_spec_for_task(resolve_task(load_project(root), "read"), project="big", project_version_id=version)
    consumer = (await client.stub.SubmitRun(ame_service_pb2.SubmitRunRequest(spec=codecs.run_spec_to_pb(spec)))).run

    async def ended() -> ame_service_pb2.GetRunResponse | None:
        got = await client.stub.GetRun(ame_service_pb2.GetRunRequest(run_id=consumer.id))
        return got if got.run.state == run_pb2.RUN_STATE_FAILED else None

    over = "data set 'words' is 1.5k, over its declared size 1k"
    failed = await wait_until(ended, timeout=60, interval=0.1, message="the consumer to fail")
    assert "data set 'words' failed" in failed.run.reason and over in failed.run.reason, failed
    (words,) = (await client.stub.ListDataSets(ame_service_pb2.ListDataSetsRequest(project="big"))).data_sets
    assert (words.status, words.file_count, words.version_id) == ("failed", 0, ""), words
    assert over in words.reason, words
