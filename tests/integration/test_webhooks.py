"""Webhooks on the in-process stack: signed deliveries start one run each, with the payload as task arguments;
everything unauthenticated is refused alike, and nothing ever shows the signing secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import Sum

from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame_api.webhooks import REFUSED_BODY
from tests.integration.clients import Grpc, py
from tests.integration.project_support import rest_push, sdk_push
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

SECRET = "whsec-the-hook-secret-value-9f8e7d"
SHOW_ARGS = """\
import os, ame
print("env", os.environ.get("AME_TASK_ARGS"))
print("file", open(os.environ["AME_TASK_ARGS_FILE"]).read())
print("in_task", os.environ.get("AME_IN_TASK"), ame.in_task())
print("sdk", ame.task_args()["ref"])
"""


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "ame.yml").write_text(
        f"""\
project: hooked
tasks:
  - name: on_push
    executor: !custom
      command: {shlex.quote(sys.executable)} show_args.py
    triggers:
      webhook:
        secret: HOOK_KEY
  - name: plain
    executor: !custom
      command: echo plain
"""
    )
    (root / "show_args.py").write_text(SHOW_ARGS)
    return root


def _github(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


def _ame(body: bytes, delivery: str, at: int, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-AME-Timestamp": str(at), "X-AME-Signature-256": f"sha256={digest}", "X-AME-Delivery": delivery}


def _refused_count(stack: Stack) -> int:
    reader = stack.runtime.telemetry.metrics_memory
    assert reader is not None
    data = reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "ame.webhooks.refused" and isinstance(metric.data, Sum):
                    total += sum(int(point.value) for point in metric.data.data_points)
    return total


async def _runs_of(client: Grpc) -> list[str]:
    response = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="hooked", task="on_push"))
    return [r.id for r in response.runs]


async def test_signed_deliveries_start_one_run_each_and_everything_else_is_refused(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    put = await rest.put("/v1/secrets/HOOK_KEY", json={"value": SECRET})
    assert put.status_code in (200, 201), put.text
    await sdk_push(stack.grpc_target, _project(tmp_path / "proj"), tmp_path / "cache", project="hooked", activate=True)
    seen: list[str] = []  # every response text, checked for the secret at the end

    async with httpx.AsyncClient(base_url=stack.rest_url, timeout=30) as hooks:
        url = "/v1/hooks/default/hooked/on_push"
        body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()

        # A signed delivery: 202 with its run, which sees the payload in its environment and in the file.
        first = await hooks.post(url, content=body, headers=_github(body, "d-1"))
        seen.append(first.text)
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        followed = await client.follow(run_id)
        compact = json.dumps(json.loads(body), separators=(",", ":"))
        assert followed.texts[-4:] == [f"env {compact}", f"file {compact}", "in_task 1 True", "sdk refs/heads/main"]
        run = (await rest.get(f"/v1/runs/{run_id}")).json()
        assert run["trigger"] == "webhook" and run["started_by"] == "trigger:webhook", run
        assert run["spec"]["args"] == json.loads(body), run
        assert run["spec"]["project_version_id"], run

        # The same delivery again: the same run, and no other.
        again = await hooks.post(url, content=body, headers=_github(body, "d-1"))
        assert again.status_code == 202 and again.json()["run_id"] == run_id, again.text
        assert (first.json()["redelivery"], again.json()["redelivery"]) == (False, True)
        # The same signed bytes under a fresh delivery id (the id is not signed): a replay, not a new run.
        replayed = await hooks.post(url, content=body, headers=_github(body, "d-1-replayed"))
        assert replayed.status_code == 202 and replayed.json()["run_id"] == run_id, replayed.text
        assert await _runs_of(client) == [run_id]

        refused_before = _refused_count(stack)
        # A tampered body (signature of another), a stale AME timestamp, an unknown hook, an unsigned delivery:
        # the same 401, byte for byte, and no run.
        tampered = await hooks.post(url, content=body.replace(b"main", b"evil"), headers=_github(body, "d-2"))
        stale_at = int(time.time()) - 600
        stale = await hooks.post(url, content=body, headers=_ame(body, "d-3", stale_at))
        unknown = await hooks.post("/v1/hooks/default/hooked/nope", content=body, headers=_github(body, "d-4"))
        not_a_hook = await hooks.post("/v1/hooks/default/hooked/plain", content=body, headers=_github(body, "d-5"))
        no_org = await hooks.post("/v1/hooks/nowhere/hooked/on_push", content=body, headers=_github(body, "d-6"))
        wrong_key = await hooks.post(url, content=body, headers=_github(body, "d-7", secret="guess"))
        unsigned = await hooks.post(url, content=body)
        refusals = [tampered, stale, unknown, not_a_hook, no_org, wrong_key, unsigned]
        seen.extend(r.text for r in refusals)
        assert {r.status_code for r in refusals} == {401}, [(r.status_code, r.text) for r in refusals]
        assert {r.content for r in refusals} == {json.dumps(REFUSED_BODY, separators=(",", ":")).encode()}
        assert {tuple(sorted(k for k in r.headers if k != "x-request-id")) for r in refusals} == {
            tuple(sorted(k for k in tampered.headers if k != "x-request-id"))
        }
        assert await _runs_of(client) == [run_id]
        assert _refused_count(stack) == refused_before + len(refusals)

        # AME's own scheme with a fresh timestamp: a new delivery, a new run.
        fresh = await hooks.post(url, content=body, headers=_ame(body, "d-8", int(time.time())))
        seen.append(fresh.text)
        assert fresh.status_code == 202, fresh.text
        assert fresh.json()["run_id"] != run_id
        assert sorted(await _runs_of(client)) == sorted([run_id, fresh.json()["run_id"]])

        # Oversized: 413 before anything is read further.
        big = b'{"pad": "' + b"x" * (600 * 1024) + b'"}'
        oversized = await hooks.post(url, content=big, headers=_github(big, "d-9"))
        assert oversized.status_code == 413, oversized.text

        # Signed, but not JSON a run can take: 422 with a short reason, never a 500, and no run.
        for delivery, bad in (("d-10", b'{"x": NaN}'), ("d-11", b"[" * 5000 + b"]" * 5000), ("d-12", b"{nope")):
            answer = await hooks.post(url, content=bad, headers=_github(bad, delivery))
            assert answer.status_code == 422 and len(answer.text) < 300, answer.text
        assert len(await _runs_of(client)) == 2

        # The deliveries so far, as `ame hooks list` shows them (a refusal is recorded just after its answer).
        async def listing() -> list[dict[str, Any]]:
            hooks_now = (await rest.get("/v1/hooks", params={"project": "hooked"})).json()["webhooks"]
            assert [(h["task"], h["secret_name"]) for h in hooks_now] == [("on_push", "HOOK_KEY")], hooks_now
            outcomes = [(d["delivery_id"], d["status"], d["run_id"]) for d in hooks_now[0]["deliveries"]]
            assert ("d-2", 401, "") in outcomes and ("d-3", 401, "") in outcomes, outcomes
            return list(hooks_now)

        listed: list[dict[str, Any]] = await wait_until(listing, message="the refused deliveries in the listing")
        seen.append(json.dumps(listed))
        assert str(listed[0]["url"]).endswith("/v1/hooks/default/hooked/on_push"), listed
        outcomes = [(d["delivery_id"], d["status"], d["run_id"]) for d in listed[0]["deliveries"]]
        assert outcomes[0] == ("d-12", 422, ""), outcomes
        assert ("d-8", 202, fresh.json()["run_id"]) in outcomes, outcomes
        assert ("d-1", 202, run_id) in outcomes, outcomes

        # A flood: past the hook's burst, 429 with Retry-After (no lookup, no run).
        answers = [await hooks.post(url, content=b"{}") for _ in range(40)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
        assert {a.status_code for a in answers} <= {401, 429}
        assert len(await _runs_of(client)) == 2

    # The secret's value is in no response and no log record.
    assert all(SECRET not in text for text in seen)
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.args) for record in caplog.records)


def _pipeline_project(root: Path, trigger: str) -> Path:
    """A pipeline of a step and a parallel group, each step printing the task arguments it was given."""
    root.mkdir(parents=True)
    (root / "ame.yml").write_text(
        f"""\
project: piped
tasks:
  - name: step
    executor: !custom
      command: {shlex.quote(sys.executable)} show.py
  - name: both
    pipeline:
      - taskRef: step
      - - name: left
          executor: !custom
            command: {shlex.quote(sys.executable)} show.py left
        - name: right
          executor: !custom
            command: {shlex.quote(sys.executable)} show.py right
    triggers:
      {trigger}
  - name: nested
    pipeline:
      - - taskRef: both
        - taskRef: step
"""
    )
    (root / "show.py").write_text("import os, sys\nprint(sys.argv[1:], os.environ.get('AME_TASK_ARGS', '-'))\n")
    return root


async def _pipeline_ended(client: Grpc, parent: str) -> dict[str, tuple[int, list[str]]]:
    """Each step's (state, output) once the pipeline has ended."""
    terminal = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}

    async def ended() -> bool:
        return (await client.get(parent)).state in terminal

    await wait_until(ended, 60, message=f"pipeline {parent} to end")
    assert (await client.get(parent)).state == run_pb2.RUN_STATE_SUCCEEDED, await client.get(parent)
    children = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(parent_run_id=parent))
    steps = {}
    for child in children.runs:
        followed = await client.follow(child.id)
        steps[child.spec.labels["ame.pipeline.step"]] = (
            child.state,
            [t for _, s, t in followed.lines if s == "stdout"],
        )
    return steps


async def test_a_hooked_pipeline_runs_every_step_with_the_payload(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    put = await rest.put("/v1/secrets/HOOK_KEY", json={"value": SECRET})
    assert put.status_code in (200, 201), put.text
    root = _pipeline_project(tmp_path / "pipe", "webhook: {secret: HOOK_KEY}")
    await sdk_push(stack.grpc_target, root, tmp_path / "cache", project="piped", activate=True)
    listed = (await rest.get("/v1/hooks")).json()["webhooks"]
    assert [(h["project"], h["task"]) for h in listed] == [("piped", "both")], listed
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    async with httpx.AsyncClient(base_url=stack.rest_url, timeout=30) as hooks:
        answer = await hooks.post("/v1/hooks/default/piped/both", content=body, headers=_github(body, "p-1"))
    assert answer.status_code == 202, answer.text
    parent = answer.json()["run_id"]
    run = (await rest.get(f"/v1/runs/{parent}")).json()
    assert run["trigger"] == "webhook" and run["spec"]["pipeline"], run
    compact = '{"ref":"refs/heads/main"}'
    # A payload every step carries, too big for the bus three times over: refused at once, no run left queued.
    big = json.dumps({"ref": "x" * 400_000}).encode()
    async with httpx.AsyncClient(base_url=stack.rest_url, timeout=30) as hooks:
        refused = await hooks.post("/v1/hooks/default/piped/both", content=big, headers=_github(big, "p-2"))
    assert refused.status_code == 422, refused.text
    assert "the bus carries at most" in refused.json()["error"], refused.text
    listed_runs = await client.stub.ListRuns(ame_service_pb2.ListRunsRequest(project="piped", task="both"))
    assert [r.id for r in listed_runs.runs] == [parent]
    assert await _pipeline_ended(client, parent) == {
        "step": (run_pb2.RUN_STATE_SUCCEEDED, [f"[] {compact}"]),
        "left": (run_pb2.RUN_STATE_SUCCEEDED, [f"['left'] {compact}"]),
        "right": (run_pb2.RUN_STATE_SUCCEEDED, [f"['right'] {compact}"]),
    }


async def test_a_scheduled_pipeline_starts_the_whole_pipeline(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = _pipeline_project(tmp_path / "pipe", 'schedule: "0 * * * *"')
    await sdk_push(stack.grpc_target, root, tmp_path / "cache", project="piped", activate=True)
    listed = (await rest.get("/v1/schedules", params={"project": "piped"})).json()["schedules"]
    assert [(s["project"], s["task"]) for s in listed] == [("piped", "both")], listed
    started = await rest.post("/v1/schedules/both/trigger", params={"project": "piped"})
    assert started.status_code == 201, started.text
    parent = started.json()["id"]
    assert started.json()["trigger"] == "schedule"
    assert await _pipeline_ended(client, parent) == {
        "step": (run_pb2.RUN_STATE_SUCCEEDED, ["[] null"]),
        "left": (run_pb2.RUN_STATE_SUCCEEDED, ["['left'] null"]),
        "right": (run_pb2.RUN_STATE_SUCCEEDED, ["['right'] null"]),
    }


async def test_a_trigger_on_a_pipeline_the_server_cannot_run_fails_the_push_with_the_reason(
    stack: Stack, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    for trigger, word in (("webhook: {secret: HOOK_KEY}", "webhook"), ('schedule: "0 * * * *"', "schedule")):
        root = tmp_path / word
        root.mkdir()
        # A pipeline inside a parallel group: `-l` runs it, the server cannot (yet).
        (root / "ame.yml").write_text(
            f"""\
project: refused-{word}
tasks:
  - name: step
    executor: !custom
      command: echo step
  - name: inner
    pipeline:
      - taskRef: step
  - name: nested
    pipeline:
      - - taskRef: inner
        - taskRef: step
    triggers:
      {trigger}
"""
        )
        response = await rest_push(rest, root, project=f"refused-{word}")
        assert response.status_code == 422, response.text
        assert f"task 'nested' has a {word}, but the server cannot run it" in response.text, response.text
        assert "inside a parallel group" in response.text, response.text
    assert [h for h in (await rest.get("/v1/hooks")).json()["webhooks"] if h["project"].startswith("refused")] == []
    assert [
        s for s in (await rest.get("/v1/schedules")).json()["schedules"] if s["project"].startswith("refused")
    ] == []


async def test_arguments_of_a_submitted_run_reach_its_process(client: Grpc) -> None:
    code = "import os, ame; print(os.environ['AME_TASK_ARGS'], ame.task_args()['lr'], os.environ['AME_IN_TASK'])"
    run = await client.submit(py(code), args_json='{"lr":0.1}')
    followed = await client.follow(run.id)
    assert followed.texts[-1:] == ['{"lr":0.1} 0.1 1'], followed.texts


async def test_seed_003_recurring_pipeline_is_scheduled_and_runs(
    stack: Stack, client: Grpc, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Seed 003's `recurring_tasks` entry names a mapping-style pipeline: the push schedules it as it is."""
    put = await rest.put("/v1/secrets/storagesecret", json={"value": "seed-003-storage-value"})
    assert put.status_code in (200, 201), put.text
    root = tmp_path / "seed003"
    root.mkdir()
    # The seed's text, its elided secret completed as its pipeline example writes it.
    (root / "ame.yml").write_text(
        """\
#ame.yaml
projectname: bestproject
recurring_tasks:
  daily_training:
    taskref: main
    schedule: 0 12 * * *
tasks:
  main:
    pipeline:
      download_data:
        runcommand: python downloaddata.py
        secrets:
          name: storagesecret
          envkey: STORAGE_SECRET
...
"""
    )
    (root / "downloaddata.py").write_text("import os\nprint('downloaded', len(os.environ['STORAGE_SECRET']))\n")
    await sdk_push(stack.grpc_target, root, tmp_path / "cache", project="bestproject", activate=True)
    listed = (await rest.get("/v1/schedules", params={"project": "bestproject"})).json()["schedules"]
    assert [(s["task"], s["cron"]) for s in listed] == [("daily_training", "0 12 * * *")], listed
    started = await rest.post("/v1/schedules/daily_training/trigger", params={"project": "bestproject"})
    assert started.status_code == 201, started.text
    assert [step["name"] for stage in started.json()["spec"]["pipeline"] for step in stage["steps"]] == [
        "download_data"
    ]
    assert await _pipeline_ended(client, started.json()["id"]) == {
        "download_data": (run_pb2.RUN_STATE_SUCCEEDED, [f"downloaded {len('seed-003-storage-value')}"])
    }
