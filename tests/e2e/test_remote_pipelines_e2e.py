"""Remote pipelines on `ame server`, driven by the CLI: a parent run whose steps are child runs on separate
working directories, with each step's files carried to the steps after it, shown as `-l` shows them.

Steps record each execution by appending their name to a marks file outside the project, so "ran once" is
counted, not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import AME, Server, _deadline_wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PY = sys.executable


def _mark(marks: Path, name: str) -> str:
    """A shell snippet that appends `name` to the marks file."""
    return f"echo {name} >> {marks}"


def _gate(gate: Path) -> str:
    """A command that waits until the file `gate` exists (the test creates it when the step may go on)."""
    script = gate.parent / "gate.py"
    if not script.exists():
        script.write_text(
            "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists():\n    time.sleep(0.05)\n"
        )
    return f"{PY} {script} {gate}"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("pipelines") / "home")
    s.home.mkdir()
    s.start()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _project(root: Path, yml: str) -> Path:
    root.mkdir(parents=True)
    (root / "ame.yml").write_text(yml)
    return root


def _marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _table(stderr: str) -> dict[str, list[str]]:
    """The steps table's rows by step name: [state, duration, exit, reason...]."""
    rows: dict[str, list[str]] = {}
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("STEP "))
    for line in lines[start + 1 :]:
        if line.startswith("run "):
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def test_seed_parallel_pipeline_carries_files_to_the_next_step(shared_server: Server, tmp_path: Path) -> None:
    listing = f"{PY} -c \"print('model from', sorted(__import__('os').listdir('data')))\""
    # Seed 001's parallel pipeline (23_pipeline_parallel.yml, taskrefs and a parallel group), with commands that
    # write the data sets the training step then reads on its own machine.
    project = _project(
        tmp_path / "seedpar",
        f"""project: xgboost_project
tasks:
  - name: train_my_model
    pipeline:
      - - taskref: prepare_dataset_one
        - taskref: prepare_dataset_two
      - taskref: training
  - name: prepare_dataset_one
    executor:
      !custom
      command: mkdir -p data && printf '1\\n2\\n' > data/one.csv && echo one > data/who.txt && echo one written
    resources:
      memory: 1G
      cpu: 1
  - name: prepare_dataset_two
    executor:
      !custom
      command: mkdir -p data && printf '3\\n' > data/two.csv && echo two > data/who.txt && echo two written
    resources:
      cpu: 1
  - name: training
    executor:
      !custom
      command: cat data/one.csv data/two.csv && echo last=$(cat data/who.txt) && {listing}
""",
    )
    remote = shared_server.ame_in(project, "task", "run", "train_my_model")
    assert remote.returncode == 0, remote.stderr
    out = remote.stdout.splitlines()
    # Every line prefixed with its step, padded as -l pads it; the later step read what the group wrote.
    assert "[prepare_dataset_one] one written" in out
    assert "[prepare_dataset_two] two written" in out
    assert [line for line in out if line.startswith("[training]")] == [
        "[training]            1",
        "[training]            2",
        "[training]            3",
        # Both steps of the group wrote who.txt: their layers lie in declaration order, so the second wins.
        "[training]            last=two",
        "[training]            model from ['one.csv', 'two.csv', 'who.txt']",
    ]
    rows = _table(remote.stderr)
    assert list(rows) == ["prepare_dataset_one", "prepare_dataset_two", "training"]
    assert all(row[0] == "succeeded" for row in rows.values()), remote.stderr
    parent = next(line.split()[2] for line in remote.stderr.splitlines() if line.startswith("ame: run "))

    # The files were carried on the server; at the end, what the steps wrote came back into the project
    # directory, as `-l` leaves it there (a later step's file winning its path).
    assert sorted(p.name for p in (project / "data").iterdir()) == ["one.csv", "two.csv", "who.txt"]
    assert (project / "data" / "one.csv").read_text() == "1\n2\n"
    assert (project / "data" / "who.txt").read_text() == "two\n"
    assert "ame: 3 file(s) of the steps downloaded" in remote.stderr, remote.stderr

    # `ame runs get PARENT` prints the same table; the steps are child runs of the parent.
    got = shared_server.ame("runs", "get", parent)
    assert got.returncode == 0, got.stderr
    assert "succeeded" in got.stdout.splitlines()[0]
    assert _table(got.stdout) == rows

    # -l prints the same lines (parallel steps may interleave differently) and exits the same.
    local = shared_server.ame_in(project, "task", "run", "-l", "train_my_model")
    assert local.returncode == 0, local.stderr
    # (Locally the group shares one directory, so who.txt is whichever step wrote last.)
    assert sorted(line for line in local.stdout.splitlines() if "last=" not in line) == sorted(
        line for line in out if "last=" not in line
    )


def test_a_failing_middle_step_skips_the_rest_and_sets_the_exit_code(shared_server: Server, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    flag = tmp_path / "fail"
    flag.touch()
    # Seed 003's mapping-style pipeline (the old dialect), its middle step failing.
    project = _project(
        tmp_path / "seed003",
        f"""projectname: bestproject
tasks:
  main:
    pipeline:
      download_data:
        runcommand: {_mark(marks, "download_data")} && echo raw > raw.txt
        resources:
          cpu: 2
          memory: 1Gi
      prepare_data:
        runcommand: {_mark(marks, "prepare_data")} && cat raw.txt && test ! -e {flag} || exit 4
        resources:
          cpu: 1
      train_model:
        runcommand: {_mark(marks, "train_model")}
""",
    )
    remote = shared_server.ame_in(project, "task", "run", "main")
    assert remote.returncode == 4, remote.stderr
    assert "[prepare_data]  raw" in remote.stdout.splitlines()
    rows = _table(remote.stderr)
    assert [rows[name][0] for name in ("download_data", "prepare_data", "train_model")] == [
        "succeeded",
        "failed",
        "skipped",
    ]
    assert rows["prepare_data"][2] == "4"
    assert _marks(marks) == ["download_data", "prepare_data"]
    local = shared_server.ame_in(project, "task", "run", "-l", "main")
    assert local.returncode == remote.returncode
    (project / "raw.txt").unlink()  # what -l wrote here; the remote steps never see it

    # `ame runs resume PARENT`: the failed step and those after it run; the step that succeeded is reused, its
    # files too (prepare_data reads raw.txt, which download_data wrote in the first run).
    flag.unlink()
    parent = next(line.split()[2] for line in remote.stderr.splitlines() if line.startswith("ame: run "))
    marks.write_text("")
    resumed = shared_server.ame("runs", "resume", parent)
    assert resumed.returncode == 0, resumed.stderr
    assert "[prepare_data]  raw" in resumed.stdout.splitlines()
    assert _marks(marks) == ["prepare_data", "train_model"]
    rows = _table(resumed.stderr)
    assert [rows[name][0] for name in ("download_data", "prepare_data", "train_model")] == ["succeeded"] * 3
    assert " ".join(rows["download_data"][3:]).startswith("reused from run ")

    # A step failing inside a parallel group cancels its running sibling (as -l does) and skips what follows.
    gate = tmp_path / "never"
    project = _project(
        tmp_path / "groupfail",
        f"""project: groupfail
tasks:
  - name: main
    pipeline:
      - - name: slow
          executor: !custom
            command: {_mark(marks, "slow")} && {_gate(gate)}
        - name: bad
          executor: !custom
            command: {_gate(tmp_path / "slow-started")} ; exit 3
      - name: after
        executor: !custom
          command: {_mark(marks, "after")}
""",
    )
    proc = subprocess.Popen(
        [*AME, "task", "run", "main"],
        cwd=project,
        env=shared_server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _deadline_wait(lambda: "slow" in _marks(marks), 60, "the slow step to start")
    (tmp_path / "slow-started").touch()
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr.decode()
    rows = _table(stderr.decode())
    assert (rows["slow"][0], rows["bad"][0], rows["after"][0]) == ("cancelled", "failed", "skipped")
    assert "after" not in _marks(marks)


def test_cancelling_the_parent_during_a_parallel_group_cancels_its_running_steps(
    shared_server: Server, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    gate = tmp_path / "never"
    project = _project(
        tmp_path / "cancel",
        f"""project: cancelgroup
tasks:
  - name: main
    pipeline:
      - - name: a
          executor: !custom
            command: {_mark(marks, "a")} && {_gate(gate)}
        - name: b
          executor: !custom
            command: {_mark(marks, "b")} && {_gate(gate)}
      - name: c
        executor: !custom
          command: {_mark(marks, "c")}
""",
    )
    started = shared_server.ame_in(project, "task", "run", "main", "--detach")
    assert started.returncode == 0, started.stderr
    parent = started.stdout.strip()
    follower = subprocess.Popen(
        [*AME, "runs", "follow", parent], env=shared_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _deadline_wait(lambda: sorted(_marks(marks)) == ["a", "b"], 60, "both steps of the group to run")
    cancelled = shared_server.ame("runs", "cancel", parent)
    assert cancelled.returncode == 0, cancelled.stderr
    _stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 130, stderr.decode()
    rows = _table(stderr.decode())
    assert (rows["a"][0], rows["b"][0], rows["c"][0]) == ("cancelled", "cancelled", "skipped")
    got = shared_server.ame("runs", "get", parent, "--json")
    assert json.loads(got.stdout)["state"] == "cancelled"
    children = shared_server.ame("runs", "list", "--project", "cancelgroup", "--json")
    states = sorted(run["state"] for run in json.loads(children.stdout) if run["parent_run_id"] == parent)
    assert states == ["cancelled", "cancelled"]
    assert sorted(_marks(marks)) == ["a", "b"]


def test_a_server_restart_mid_pipeline_runs_no_step_twice(ame_server: Server, tmp_path: Path) -> None:
    """The restart falls while the pipeline's second step waits for admission (a first step done, its successor
    submitted): afterwards the pipeline goes on from there, and each step ran exactly once."""
    marks = tmp_path / "marks"
    gate = tmp_path / "a-may-end"
    blocker_gate = tmp_path / "never"
    project = _project(
        tmp_path / "restart",
        f"""project: restart
tasks:
  - name: main
    pipeline:
      - name: a
        executor: !custom
          command: {_mark(marks, "a")} && {_gate(gate)} && echo a-data > a.txt
      - name: b
        executor: !custom
          command: {_mark(marks, "b")} && cat a.txt
      - name: c
        executor: !custom
          command: {_mark(marks, "c")}
""",
    )
    ame_server.start()
    started = ame_server.ame_in(project, "task", "run", "main", "--detach")
    assert started.returncode == 0, started.stderr
    parent = started.stdout.strip()
    _deadline_wait(lambda: _marks(marks) == ["a"], 60, "step a to run")
    # One slot, held by a: a run submitted now waits for it, and takes it when a ends, so b then waits.
    limited = ame_server.ame("org", "set-limits", "default", "--max-runs", "1")
    assert limited.returncode == 0, limited.stderr
    blocker = ame_server.ame("runs", "submit", "--no-follow", "--", _gate(blocker_gate))
    assert blocker.returncode == 0, blocker.stderr
    gate.touch()

    def b_waits() -> bool:
        listed = ame_server.ame("runs", "list", "--project", "restart", "--json")
        runs = json.loads(listed.stdout) if listed.returncode == 0 else []
        return any(r["parent_run_id"] == parent and r["state"] == "queued" and "waiting" in r["reason"] for r in runs)

    _deadline_wait(b_waits, 60, "step b to wait for admission")
    assert ame_server.stop() == 0
    ame_server.start()
    # The stop cancelled the blocker, which frees the slot: b starts on the restarted server.
    unlimited = ame_server.ame("org", "set-limits", "default", "--max-runs", "none")
    assert unlimited.returncode == 0, unlimited.stderr
    followed = ame_server.ame("runs", "follow", parent)
    assert followed.returncode == 0, followed.stderr
    assert "[b] a-data" in followed.stdout.splitlines()
    rows = _table(followed.stderr)
    assert all(rows[name][0] == "succeeded" for name in ("a", "b", "c")), followed.stderr
    assert _marks(marks) == ["a", "b", "c"]
    # Nothing else was submitted for the pipeline after the restart.
    listed = ame_server.ame("runs", "list", "--project", "restart", "--json")
    assert sorted(r["spec"]["task"] for r in json.loads(listed.stdout) if r["parent_run_id"] == parent) == [
        "a",
        "b",
        "c",
    ]
