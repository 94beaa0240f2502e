"""Seed 004's walkthrough through `ame server`, with the SDK exactly as the seed writes it: zip main.py and
requirements.txt, upload, list, run_once with json_args read back through task_args(), last_runs then logs(limit=5),
run_scheduled every minute under a simulated clock (two fires), kill, and no run after it. Then what is refused,
a packaging failure that names the requirement, and the CLI group."""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import ame
from ame.domain.orchestrations import TaskStatus
from ame.sdk import InvalidArgument
from ame.sdk.errors import PackagingFailed
from tests.e2e.test_ame_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Simulated seconds per real second: a minute's slot every 2 s.
RATE = 30.0

MAIN_PY = """\
import ame
import six

# get the arguments
wl = ame.Client()
# if true, get the arguments passed to the task
if wl.in_task():
    arguments = wl.task_args()
    # arguments is a key/value pair, set the workspace and pipeline name
    workspace_name = arguments['workspace_name']
    pipeline_name = arguments['pipeline_name']
# False: We're not in a Task, so set the pipeline manually
else:
    workspace_name = "bigqueryworkspace"
    pipeline_name = "bigquerypipeline"

print("Getting the workspace", workspace_name)
print("Getting the pipeline", pipeline_name)
print("six", six.__version__)
print("module", ame.in_task(), ame.task_args() == arguments)
if arguments.get("sleep"):
    import time

    print("sleeping")  # no flush: a task's lines reach run.logs() while it runs
    time.sleep(arguments["sleep"])
if arguments.get("spawn"):
    # The run's own token: an orchestration starts another task.
    child = wl.list_orchestrations()[0].run_once(
        name=arguments["spawn"], json_args={"workspace_name": "child", "pipeline_name": "p"}
    )
    print("started", child.id)
print("Inference time. Displaying results after.")
print("done", workspace_name, pipeline_name)
"""

T = TypeVar("T")


def _wait(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _zip(files: dict[str, str | bytes], **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, **kwargs) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def seed_server(ame_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    start = datetime.now(UTC)
    ame_server.extra_env.update(AME_CLOCK_START=start.isoformat(), AME_CLOCK_RATE=str(RATE))
    ame_server.start()
    # `ame.Client()` with no arguments, as the seed writes it: the local server's endpoint and token.
    for name in ("AME_TOKEN", "AME_GRPC_TARGET", "AME_REST_URL", "AME_GRPC_TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AME_HOME", str(ame_server.home))
    monkeypatch.setenv("AME_CONFIG_DIR", str(ame_server.home / "config"))
    return ame_server


def _simulated_now(server: Server) -> datetime:
    start = datetime.fromisoformat(server.extra_env["AME_CLOCK_START"])
    return start + (datetime.now(UTC) - start) * RATE


def test_seed_004_walkthrough(seed_server: Server, tmp_path: Path) -> None:
    # $ zip hello.zip main.py requirements.txt
    hello = tmp_path / "hello.zip"
    hello.write_bytes(_zip({"main.py": MAIN_PY, "requirements.txt": "six==1.16.0\n"}))

    wl = ame.Client()
    assert wl.in_task() is False and wl.task_args() is None
    orchestration = wl.upload_orchestration(path=str(hello))
    assert orchestration.name == "hello" and orchestration.filename == "hello.zip"

    listed = wl.list_orchestrations()
    assert [(o.id, o.name, o.filename, o.sha) for o in listed] == [
        (orchestration.id, "hello", "hello.zip", hashlib.sha256(hello.read_bytes()).hexdigest())
    ]
    table = listed._repr_html_()
    for header in ("id", "name", "status", "filename", "sha", "created at", "updated at"):
        assert f"<th>{header}</th>" in table
    assert orchestration.id in repr(listed)

    # run_once waits for the packaging run; the environment is then ready.
    task = orchestration.run_once(
        name="house price run once 2",
        json_args={"workspace_name": "ws", "pipeline_name": "pl", "spawn": "spawned by the task"},
    )
    assert orchestration.status() == "ready"
    text = str(task)
    assert "Temporary Run" in text and "house price run once 2" in text and re.search(r"Schedule\s+-", text), text
    assert "<td>Last Run Status</td>" in task._repr_html_()
    assert _wait(lambda: task.status() if task.status() in ("success", "failure") else None, 120, "the run") == (
        "success"
    ), [str(r.logs()) for r in task.last_runs()]

    runs = task.last_runs()
    assert [(r.task_id, r.status) for r in runs] == [(task.id, "success")]
    assert runs[0].pod_id == runs[0].run_id
    logs = runs[0].logs(limit=5)
    assert len(logs) == 5, logs
    stamp = r"^\d{4}-\d{2}-[A-Z][a-z]{2} \d{2}:\d{2}:\d{2} "
    assert all(re.match(stamp, line) for line in logs), logs
    assert logs[-1].endswith(" done ws pl"), logs
    whole = [re.sub(stamp, "", line) for line in runs[0].logs()]
    assert whole[:4] == ["Getting the workspace ws", "Getting the pipeline pl", "six 1.16.0", "module True True"]

    # The task started another one with the run's own token: a token of the run, so `token list` leaves it out
    # (revoked when the run ended, deleted an hour later; see tests/integration/test_orchestration_tasks.py).
    tokens = seed_server.ame("token", "list")
    assert tokens.returncode == 0 and f"run {runs[0].run_id}" not in tokens.stdout, tokens
    child_id = next(line.split()[1] for line in whole if line.startswith("started "))
    child = next(t for t in wl.list_tasks() if t.id == child_id)
    assert child.name == "spawned by the task"
    assert (
        _wait(lambda: child.status() if child.status() in ("success", "failure") else None, 120, "child") == "success"
    )

    # A scheduled task: every minute under the simulated clock; two fires, then kill, then nothing more.
    scheduled = orchestration.run_scheduled(
        name="schedule example",
        timeout=600,
        schedule={"*/1 * * * *"},
        json_args={"workspace_name": "every", "pipeline_name": "minute"},
    )
    assert (scheduled.type, scheduled.schedule, scheduled.active) == ("Scheduled Run", "*/1 * * * *", True)
    assert scheduled.status() == "started"
    _wait(lambda: len([r for r in scheduled.last_runs() if r.status == "success"]) >= 2, 120, "two scheduled runs")
    assert scheduled.kill() is TaskStatus.PENDING_KILL
    killed_at = _simulated_now(seed_server)
    before = {r.run_id for r in scheduled.last_runs()}
    while _simulated_now(seed_server) < killed_at + timedelta(minutes=3):
        assert {r.run_id for r in scheduled.last_runs()} == before, "a run after the kill"
        time.sleep(0.25)
    assert _wait(lambda: scheduled.status() == "killed", 60, "the kill to settle")
    assert [t.id for t in wl.list_tasks(killed=True)] == [scheduled.id]
    listed_tasks = wl.list_tasks()
    assert {t.id for t in listed_tasks} == {task.id, child_id, scheduled.id}
    assert listed_tasks[0].updated_at >= listed_tasks[-1].updated_at
    assert "last run status" in repr(listed_tasks)
    assert [r.status for r in scheduled.last_runs(status="success", limit=1)] == ["success"]
    with pytest.raises(InvalidArgument, match="is not one of"):
        scheduled.last_runs(status="sideways")

    # A running run finishes after kill() unless it is cancelled; its output is readable while it runs.
    slow = orchestration.run_once(name="slow", json_args={"workspace_name": "s", "pipeline_name": "s", "sleep": 300})
    running = _wait(lambda: [r for r in slow.last_runs() if r.status == "running"], 60, "the slow run to start")[0]
    _wait(lambda: any(line.endswith(" sleeping") for line in running.logs()), 30, "its output while it runs")
    assert slow.kill(cancel=True) is TaskStatus.PENDING_KILL
    _wait(lambda: slow.last_runs()[0].status == "killed", 60, "the run to be cancelled")
    assert slow.status() == "killed" and slow.last_runs()[0].run_id == running.run_id

    # Uploading the same name again makes a new version of the same orchestration.
    again = wl.upload_orchestration(
        bytes_buffer=_zip({"app/main.py": MAIN_PY, "app/requirements.txt": "six==1.16.0\n"}), name="hello"
    )
    assert again.id == orchestration.id and again.sha != orchestration.sha and again.filename == "-"
    assert again.wait_for_packaging().status() == "ready"
    # Its main.py is in a subdirectory, with its requirements.txt: it runs there, with six installed.
    nested = again.run_once(name="nested", json_args={"workspace_name": "sub", "pipeline_name": "dir"})
    assert _wait(lambda: nested.status() if nested.status() in ("success", "failure") else None, 60, "nested") == (
        "success"
    ), [str(r.logs()) for r in nested.last_runs()]
    assert nested.last_runs()[0].logs(limit=1)[0].endswith(" done sub dir")

    # Refused, with the reason.
    with pytest.raises(ValueError, match="not both"):
        wl.upload_orchestration(path=str(hello), bytes_buffer=hello.read_bytes())
    refusals = {
        "no main.py": (_zip({"run.py": "print(1)"}), "no main.py"),
        "two requirements": (
            _zip({"main.py": "", "requirements.txt": "", "sub/requirements.txt": ""}),
            "2 requirements.txt",
        ),
        "escaping": (_zip({"main.py": "", "../evil.py": "x"}), "escapes the archive"),
        "bomb": (_zip({"main.py": "", "zeros.bin": b"\0" * (20 << 20)}), "zip bomb"),
        "not a zip": (b"this is not a zip file", "not a readable ZIP"),
    }
    for name, (data, reason) in refusals.items():
        with pytest.raises(InvalidArgument, match=reason):
            wl.upload_orchestration(bytes_buffer=data, name=name)
    assert [o.name for o in wl.list_orchestrations()] == ["hello"]

    # A requirement with no distribution for this Python: packaging fails and says which and why.
    failing = wl.upload_orchestration(
        bytes_buffer=_zip({"main.py": "print(1)", "requirements.txt": "tensorflow==2.0.0-alpha0\n"}),
        name="tf",
        file_name="tf.zip",
    )
    with pytest.raises(PackagingFailed, match="tensorflow") as failed:
        failing.run_once(name="never", json_args={})
    assert "2.0.0" in str(failed.value)
    shown = {o.name: (o.record.status.value, o.error) for o in wl.list_orchestrations()}
    assert shown["tf"][0] == "packaging_failed" and "tensorflow" in shown["tf"][1], shown

    # The CLI group.
    cli_list = seed_server.ame("orchestrations", "list")
    assert cli_list.returncode == 0 and "hello" in cli_list.stdout and "packaging_failed" in cli_list.stdout
    cli_logs = seed_server.ame("orchestrations", "logs", task.id, "--limit", "1")
    assert cli_logs.returncode == 0 and cli_logs.stdout.strip().endswith("done ws pl"), cli_logs
    cli_tasks = seed_server.ame("orchestrations", "tasks", "--killed")
    assert cli_tasks.returncode == 0 and scheduled.id in cli_tasks.stdout and task.id not in cli_tasks.stdout
    assert seed_server.ame("orchestrations", "delete", "tf").returncode == 0
    assert [o.name for o in wl.list_orchestrations()] == ["hello"]
    cli_upload = seed_server.ame("orchestrations", "upload", str(hello), "--name", "cli")
    assert cli_upload.returncode == 0 and re.search(r"Status\s+ready", cli_upload.stdout), cli_upload
    args = '{"workspace_name": "sh", "pipeline_name": "ell"}'
    cli_once = seed_server.ame("orchestrations", "run-once", "cli", "--name", "from the shell", "--args", args)
    assert cli_once.returncode == 0 and "Temporary Run" in cli_once.stdout, cli_once
    once_id = re.findall(r"^ID\s+(\S+)", cli_once.stdout, re.MULTILINE)[0]
    _wait(lambda: " success " in seed_server.ame("orchestrations", "runs", once_id).stdout, 60, "the shell's task")
    cli_logs = seed_server.ame("orchestrations", "logs", once_id, "--limit", "1")
    assert cli_logs.stdout.strip().endswith("done sh ell"), cli_logs
    cli_schedule = seed_server.ame("orchestrations", "schedule", "cli", "--name", "yearly", "--schedule", "0 0 1 1 *")
    assert cli_schedule.returncode == 0 and "Scheduled Run" in cli_schedule.stdout, cli_schedule
    yearly_id = re.findall(r"^ID\s+(\S+)", cli_schedule.stdout, re.MULTILINE)[0]
    cli_kill = seed_server.ame("orchestrations", "kill", yearly_id)
    assert (cli_kill.returncode, cli_kill.stdout.strip()) == (0, "pending_kill"), cli_kill
    assert wl.get_task(yearly_id).status() == "killed"
    bad = seed_server.ame("orchestrations", "schedule", "cli", "--name", "bad", "--schedule", "every minute")
    assert bad.returncode == 1 and "not a cron expression" in bad.stderr, bad
    assert sorted(o.name for o in wl.list_orchestrations()) == ["cli", "hello"]
    wl.close()
    assert seed_server.stop() == 0
