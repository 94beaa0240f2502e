"""Seed 002 as a user follows it: a git repository whose `master` holds `peach.conf/tf.yaml` and a notebook whose
`train_model` writes a file, registered with `ame projectsrc add` (tracked on `master` although the remote's
default branch is `main`), run in organisation `default`'s loop; a task over its timeout is stopped and the loop
goes on; a commit made during the first cycle runs in the second; the history (versions as short commit
hashes), logs and the duration graph (its plotted points read back) appear in `ame loops info` and
`initialize_tasks_info()`.

The platform clock runs 600 times faster, and the minimum interval between cycles is an hour of it: six real
seconds, so a loop that waited on real time would not start its second cycle here."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner, Result

import ame
from ame.cli.main import cli
from ame.contracts.api.v1 import ame_service_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain.loops import LoopExecution, LoopsInfo
from ame.peach.history import fetch_info, plot_durations, rest_client
from ame_api import app as api_app
from ame_api.secrets.settings import SecretsSettings
from ame_api.settings import ApiSettings, PeachSettings
from ame_api.sources.settings import SourceSettings
from ame_platform.clock import ClockSettings
from ame_platform.lifecycle import Supervisor, run_components
from ame_platform.storage import StorageSettings
from tests.git_http import Repo
from tests.integration.clients import Grpc
from tests.stack_fixtures import Stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

RATE = 600.0
MIN_INTERVAL_REAL = 3600.0 / RATE

TF_YAML = """\
codops: default
tasks:
  tf_task:
    notebook: tensorflow_demo.ipynb
    method: train_model
    dependencies:
      - six==1.16.0
  slow_task:
    notebook: slow.ipynb
    method: wait_forever
    timeout: 2s
  spark_task:
    executor: spark
    notebook: tensorflow_demo.ipynb
    method: train_model
"""

TRAIN_CELL = """\
%matplotlib inline
from pathlib import Path
import six

def train_model():
    !echo from-the-shell
    print("{marker} trained with six", six.__version__)
    with open({weights!r}, "a") as out:
        out.write("{marker}\\n")
"""


def _notebook(*cells: str) -> str:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_markdown_cell("Train a model and keep its weights")] + [  # type: ignore[no-untyped-call]
        nbformat.v4.new_code_cell(c)  # type: ignore[no-untyped-call]
        for c in cells
    ]
    return str(nbformat.writes(nb))  # type: ignore[no-untyped-call]


@pytest.fixture
def shared_clock() -> ClockSettings:
    return ClockSettings(start=datetime.now(UTC), anchor=datetime.now(UTC), rate=RATE)


@pytest.fixture
def scheduler_overrides(shared_clock: ClockSettings) -> dict[str, object]:
    return {"clock": shared_clock}


@pytest.fixture
def api_overrides(shared_clock: ClockSettings, tmp_path: Path) -> dict[str, object]:
    return {
        "clock": shared_clock,
        "peach": PeachSettings(min_cycle_interval="1h", poll_interval=0.2),
        "projectsrc": SourceSettings(cache_dir=tmp_path / "projectsrc", allow_local=True, poll=0.2, min_interval=1.0),
    }


async def _ame(stack: Stack, home: Path, *args: str) -> Result:
    env = {"AME_GRPC_TARGET": stack.grpc_target, "AME_HOME": str(home), "AME_REST_URL": stack.rest_url}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)


async def _info(stack: Stack, **params: Any) -> LoopsInfo:
    def read() -> LoopsInfo:
        with rest_client(stack.rest_url) as client:
            return fetch_info(client, **params)

    return await asyncio.to_thread(read)


def _of(info: LoopsInfo, task: str, cycle: int) -> LoopExecution | None:
    return next((e for e in info.executions if e.task == task and e.cycle == cycle), None)


def _commit(repo: Repo, weights: Path, marker: str) -> str:
    files = {
        "peach.conf/tf.yaml": TF_YAML,
        "tensorflow_demo.ipynb": _notebook(
            "raise RuntimeError('only the entry function cell runs')",
            TRAIN_CELL.format(marker=marker, weights=str(weights)),
        ),
        "slow.ipynb": _notebook(
            "def wait_forever():\n    import time\n    print('waiting', flush=True)\n    time.sleep(600)"
        ),
    }
    return repo.commit(files, f"train {marker}", branch="master")


async def test_seed_002_walkthrough(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    weights = tmp_path / "weights.txt"
    repo = Repo.create(tmp_path, "lab-tutorials.git", branch="main")
    repo.commit({"README.md": "PEACH tasks live on master\n"}, "readme", branch="main")
    v1 = _commit(repo, weights, "v1")

    added = await _ame(stack, home, "projectsrc", "add", str(repo.origin), "--interval", "1h")
    assert added.exit_code == 0, added.output
    source_id = added.output.strip().splitlines()[-1]
    assert f"Synchronized; commit {v1[:7]}" in added.output, added.output
    listed = await _ame(stack, home, "projectsrc", "list")
    assert "master" in listed.output, listed.output

    # Cycle 1 starts with the first task in name order: slow_task, RUNNING while the others wait.
    async def slow_running() -> LoopsInfo | None:
        info = await _info(stack)
        states = {t.task: t.state for t in info.tasks}
        return info if states == {"slow_task": "RUNNING", "spark_task": "PENDING", "tf_task": "PENDING"} else None

    await wait_until(slow_running, timeout=30, interval=0.1, message="slow_task running in cycle 1")
    # A new commit while cycle 1 runs: cycle 1 keeps the version it started with, cycle 2 takes this one.
    v2 = _commit(repo, weights, "v2")
    synced = await _ame(stack, home, "projectsrc", "sync", source_id)
    assert synced.exit_code == 0 and f"commit {v2[:7]}" in synced.output, synced.output

    async def two_cycles() -> LoopsInfo | None:
        info = await _info(stack)
        done = _of(info, "tf_task", 2)
        return info if done is not None and done.status != "running" else None

    info = await wait_until(two_cycles, timeout=240, interval=0.2, message="tf_task ended in cycle 2")
    assert weights.read_text().splitlines()[:2] == ["v1", "v2"]

    for cycle, version in ((1, v1), (2, v2)):
        slow, spark, tf = (_of(info, name, cycle) for name in ("slow_task", "spark_task", "tf_task"))
        assert slow is not None and spark is not None and tf is not None
        assert (slow.status, spark.status, tf.status) == ("timed_out", "failed", "succeeded"), info.executions
        assert "Spark master" in spark.reason
        assert tf.version == version[:7], (tf.version, version)
        # The loop went on after the timeout: each task started after the one before it ended.
        assert slow.finished_at is not None and slow.finished_at <= tf.started_at
        assert slow.duration_seconds is not None and 2.0 <= slow.duration_seconds < 30.0
    # The second cycle waited the minimum interval (an hour of the platform clock) after the first ended.
    first_end = max(e.finished_at for e in info.executions if e.cycle == 1 and e.finished_at is not None)
    second_start = min(e.started_at for e in info.executions if e.cycle == 2 and e.run_id is not None)
    assert (second_start - first_end).total_seconds() >= MIN_INTERVAL_REAL - 1.0

    tf_info = {t.task: t for t in info.tasks}["tf_task"]
    assert (tf_info.successes, tf_info.failures, tf_info.last_status) == (2, 0, "succeeded")
    assert {t.task: t.failures for t in info.tasks}["slow_task"] >= 2

    # `ame loops info`: tasks and executions, logs all together or of one execution, the graph.
    shown = await _ame(stack, home, "loops", "info", "--org", "default", "--task", "tf_task", "--logs")
    assert shown.exit_code == 0, shown.output
    assert "LAST STATUS" in shown.output and v1[:7] in shown.output and v2[:7] in shown.output
    assert "v1 trained with six 1.16.0" in shown.output and "v2 trained with six 1.16.0" in shown.output
    assert "from-the-shell" in shown.output
    second = _of(info, "tf_task", 2)
    assert second is not None and second.run_id is not None
    one = await _ame(stack, home, "loops", "info", "--task", "tf_task", "--run", second.run_id)
    assert "v2 trained" in one.output and "v1 trained" not in one.output
    other_org = await _ame(stack, home, "loops", "info", "--org", "chrts")
    assert other_org.exit_code == 1 and "404" in other_org.output

    png = tmp_path / "tf_task.png"
    plotted = await _ame(stack, home, "loops", "info", "--task", "tf_task", "--plot", str(png))
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The plotted points, read back from the figure the CLI draws, against the runs' own times.
    current = await _info(stack, task="tf_task")
    ended = [e for e in current.executions if e.task == "tf_task" and e.status != "running"]
    figure = plot_durations(current.executions)
    successes, failures = figure.axes[0].collections
    async with stack.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM finished_at - started_at) AS seconds FROM runs WHERE id = ANY($1::uuid[]) "
            "ORDER BY started_at",
            [e.run_id for e in ended],
        )
    assert [round(float(y), 3) for _, y in successes.get_offsets()] == [round(float(r["seconds"]), 3) for r in rows]
    assert len(rows) >= 2 and len(failures.get_offsets()) == 0

    slow_figure = plot_durations((await _info(stack, task="slow_task")).executions)
    slow_ok, slow_failed = slow_figure.axes[0].collections
    assert len(slow_ok.get_offsets()) == 0 and len(slow_failed.get_offsets()) >= 2
    assert all(2.0 <= float(y) < 30.0 for _, y in slow_failed.get_offsets())

    # The same view in a notebook.
    monkeypatch.setenv("AME_REST_URL", stack.rest_url)
    view = await asyncio.to_thread(ame.initialize_tasks_info, task="tf_task")
    page = view._repr_html_()
    assert "<td>tf_task</td>" in page and '<img src="data:image/png;base64,' in page and "v2 trained" in page
    assert "tf_task" in str(view) and len(view.executions) >= 2


async def test_a_broken_peach_file_fails_the_push_with_file_line_col(stack: Stack, tmp_path: Path) -> None:
    repo = tmp_path / "broken"
    (repo / "peach.conf").mkdir(parents=True)
    (repo / "peach.conf" / "tf.yaml").write_text(TF_YAML.replace("codops: default", "codops: chrts"))
    (repo / "tensorflow_demo.ipynb").write_text(_notebook("def train_model():\n    pass"))
    (repo / "slow.ipynb").write_text(_notebook("%pip install six\ndef wait_forever():\n    pass"))
    pushed = await _ame(stack, tmp_path / "home", "project", "push", str(repo))
    assert pushed.exit_code == 1
    assert "peach.conf/tf.yaml:1:9: codops 'chrts' is not this project's organisation 'default'" in pushed.output
    (repo / "peach.conf" / "tf.yaml").write_text(TF_YAML)
    pushed = await _ame(stack, tmp_path / "home", "project", "push", str(repo))
    assert pushed.exit_code == 1
    assert "task 'slow_task': slow.ipynb, cell 2: the IPython magic %pip needs a notebook kernel" in pushed.output
    assert (await _info(stack)).tasks == []


QUICK_YAML = """\
codops: default
tasks:
  first:
    notebook: quick.ipynb
    method: one
  second:
    notebook: quick.ipynb
    method: two
  third:
    notebook: quick.ipynb
    method: three
  meta:
    loop: metadata
    notebook: quick.ipynb
    method: one
"""


async def test_three_replicas_drive_the_loop_once_one_task_after_another(  # the stack's api and two more
    stack: Stack,
    tmp_path: Path,
    api_storage: StorageSettings,
    api_secrets: SecretsSettings,
    api_overrides: dict[str, object],
) -> None:
    repo = tmp_path / "quick"
    (repo / "peach.conf").mkdir(parents=True)
    (repo / "peach.conf" / "quick.yaml").write_text(QUICK_YAML)
    (repo / "quick.ipynb").write_text(
        _notebook("def one():\n    print('one')", "def two():\n    print('two')", "def three():\n    print('three')")
    )
    # Two more api replicas, of which only the loop driver runs, beside the stack's own.
    replicas = [
        api_app.build(
            ApiSettings(
                rest_port=0,
                grpc_port=0,
                storage=api_storage,
                secrets=api_secrets,
                nats=stack.nats,
                postgres=stack.postgres,
                clock=api_overrides["clock"],
                peach=api_overrides["peach"],
            ),
            stack.runtime,
        )
        for _ in range(2)
    ]
    supervisor = Supervisor()
    drivers = [r.loops for r in replicas if r.loops is not None]
    running = asyncio.create_task(run_components(drivers, graceful_timeout=5.0, supervisor=supervisor))
    try:
        pushed = await _ame(stack, tmp_path / "home", "project", "push", str(repo))
        assert pushed.exit_code == 0, pushed.output

        async def three_cycles() -> LoopsInfo | None:
            info = await _info(stack)
            ended = [e for e in info.executions if e.cycle == 3 and e.status != "running" and e.loop == "default"]
            meta = [e for e in info.executions if e.loop == "metadata" and e.status == "succeeded"]
            return info if len(ended) == 3 and len(meta) >= 2 else None

        await wait_until(three_cycles, timeout=120, interval=0.2, message="three cycles of the loop")
    finally:
        supervisor.stop.set()
        await running
    async with stack.runtime.pool.acquire() as conn:
        executions = await conn.fetch(
            "SELECT cycle, position, run_id FROM peach_executions WHERE cycle <= 3 AND loop_name = 'default' "
            "ORDER BY cycle, position"
        )
        runs = await conn.fetch(
            "SELECT id, task, idempotency_key, started_at, finished_at, state, spec FROM runs "
            "WHERE project = 'quick' ORDER BY started_at"
        )
    # The metadata loop, shared by all organisations, runs beside the organisation's own, with its 5-minute timeout.
    meta = [json.loads(r["spec"]) for r in runs if r["task"] == "meta"]
    assert len(meta) >= 2 and all((m["loop"], m["timeout_seconds"]) == ("metadata", 300.0) for m in meta), meta
    assert [(e["cycle"], e["position"]) for e in executions] == [(c, p) for c in range(1, 4) for p in range(3)]
    assert len({e["run_id"] for e in executions}) == 9
    ran = [r for r in runs if r["id"] in {e["run_id"] for e in executions}]
    assert [r["task"] for r in ran] == ["first", "second", "third"] * 3
    assert all(r["state"] == "succeeded" for r in ran), [(r["task"], r["state"]) for r in ran]
    # One after another: no run of the loop starts before the one before it has ended.
    for before, after in itertools.pairwise(ran):
        assert before["finished_at"] <= after["started_at"], (before, after)


CLASH_YAML = """\
codops: default
tasks:
  a_clash:
    notebook: quick.ipynb
    method: one
  b_wait:
    notebook: wait.ipynb
    method: wait_for_flag
    timeout: 5m
  meta:
    loop: metadata
    notebook: quick.ipynb
    method: one
"""


async def test_a_failing_loop_stops_no_other_runs_start_unlocked_and_logs_do_not_wait_on_a_running_task(
    stack: Stack, client: Grpc, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    repo = tmp_path / "clash"
    (repo / "peach.conf").mkdir(parents=True)
    (repo / "peach.conf" / "clash.yaml").write_text(CLASH_YAML)
    (repo / "quick.ipynb").write_text(_notebook("def one():\n    print('one')"))
    (repo / "wait.ipynb").write_text(
        _notebook(
            "def wait_for_flag():\n    import time\n    from pathlib import Path\n"
            "    print('waiting for the flag', flush=True)\n"
            f"    while not Path({str(flag)!r}).exists():\n        time.sleep(0.1)\n    print('flag seen', flush=True)"
        )
    )
    # The shared metadata loop (owner '', driven first) fails on every pass: the database refuses its writes.
    async with stack.runtime.pool.acquire() as conn:
        await conn.execute(
            "CREATE FUNCTION refuse_metadata() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the metadata loop is refused'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_metadata BEFORE UPDATE ON peach_loops FOR EACH ROW "
            "WHEN (NEW.loop_owner = '') EXECUTE FUNCTION refuse_metadata()"
        )
        # A loop's run is submitted (committed and published) while no transaction holds the loop's row lock: the
        # run's insert fails if one does (this stack has a single driver, so no other replica holds it meanwhile).
        await conn.execute(
            "CREATE FUNCTION loop_unlocked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.idempotency_key LIKE 'peach:%' THEN PERFORM 1 FROM peach_loops "
            "WHERE loop_owner = split_part(NEW.idempotency_key, ':', 2) "
            "AND loop_name = split_part(NEW.idempotency_key, ':', 3) FOR KEY SHARE NOWAIT; END IF; "
            "RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER loop_unlocked BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION loop_unlocked()"
        )
    # A run that took the idempotency key of the loop's first task (cycle 1, position 0) for another spec.
    await client.stub.SubmitRun(
        ame_service_pb2.SubmitRunRequest(
            spec=run_pb2.RunSpec(command="true"), idempotency_key="peach:default:default:1:0"
        )
    )
    pushed = await _ame(stack, tmp_path / "home", "project", "push", str(repo))
    assert pushed.exit_code == 0, pushed.output

    async def waiting() -> LoopsInfo | None:
        info = await _info(stack)
        states = {t.task: t.state for t in info.tasks}
        return info if states == {"a_clash": "FINISHED", "b_wait": "RUNNING", "meta": "PENDING"} else None

    try:
        info = await wait_until(waiting, timeout=60, interval=0.1, message="b_wait running after a_clash")
        assert not [e for e in info.executions if e.task == "meta"], info.executions
        clash = _of(info, "a_clash", 1)
        assert clash is not None and clash.status == "failed" and clash.run_id is None
        assert "could not start: idempotency key 'peach:default:default:1:0' was used" in clash.reason, clash.reason
        # `--logs` prints the ended executions' logs and returns while b_wait still runs (it waits for the flag).
        shown = await asyncio.wait_for(_ame(stack, tmp_path / "home", "loops", "info", "--logs"), timeout=30)
        assert shown.exit_code == 0, shown.output
        assert "b_wait" in shown.output and "waiting for the flag" not in shown.output
        still = _of(await _info(stack), "b_wait", 1)
        assert still is not None and still.status == "running"
    finally:
        flag.touch()

    async def waited() -> LoopExecution | None:
        done = _of(await _info(stack, task="b_wait"), "b_wait", 1)
        return done if done is not None and done.status != "running" else None

    assert (await wait_until(waited, timeout=60, interval=0.1, message="b_wait ended")).status == "succeeded"
