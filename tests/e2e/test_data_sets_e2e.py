"""Data sets against `ame server`, driven by the CLI: produced once for two consumers that wait while it is pending,
placed by hard link (one inode for both consumers and the cache), kept across an unrelated push, a failed producer
failing its consumers with the reason; and `ame task run -l` with and without a server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_ame_server import AME, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AME_YML = """\
project: ds-e2e
dataSets:
  - name: corpus
    path: data/corpus
    task:
      name: fetch-corpus
      executor: !custom
        command: python fetch.py
      environment:
        - key: SHARED
          val: {shared}
  - name: broken
    path: broken
    task:
      name: fetch-broken
      executor: !custom
        command: python -c "import sys; print('the source is gone'); sys.exit(3)"
tasks:
  - name: consume-a
    executor: !custom
      command: python consume.py a
    environment:
      - key: SHARED
        val: {shared}
    dataSets:
      - ref: {{name: corpus}}
  - name: consume-b
    executor: !custom
      command: python consume.py b
    environment:
      - key: SHARED
        val: {shared}
    dataSets: [corpus]
  - name: consume-broken
    executor: !custom
      command: python -c "print('never runs')"
    dataSets: [broken]
"""

# Counts its productions, says it started, and blocks until the test's go-ahead file appears (no sleeps in the
# test: it watches the files).
FETCH_PY = """\
import os, time
from pathlib import Path

shared = Path(os.environ["SHARED"])
with open(shared / "productions", "a") as out:
    out.write(os.environ["AME_RUN_ID"] + "\\n")
(shared / "producing").write_text("")
deadline = time.monotonic() + 120
while not (shared / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
Path("data/corpus/sub").mkdir(parents=True, exist_ok=True)
Path("data/corpus/words.txt").write_text("alpha beta gamma\\n")
Path("data/corpus/sub/numbers.bin").write_bytes(bytes(range(256)) * 64)
"""

# Records the inode and content of each data set file it sees, for the test to compare.
CONSUME_PY = """\
import json, os, sys
from pathlib import Path

shared = Path(os.environ["SHARED"])
seen = {}
for path in sorted(Path("data/corpus").rglob("*")):
    if path.is_file():
        seen[path.relative_to("data/corpus").as_posix()] = {"ino": path.stat().st_ino, "size": path.stat().st_size}
(shared / f"{sys.argv[1]}-{os.environ['AME_RUN_ID']}.json").write_text(json.dumps(seen))
print("consumed", len(seen), "files")
"""


def _project(root: Path, shared: Path) -> Path:
    root.mkdir(parents=True)
    shared.mkdir(parents=True, exist_ok=True)
    (root / "ame.yml").write_text(AME_YML.format(shared=shared))
    (root / "fetch.py").write_text(FETCH_PY)
    (root / "consume.py").write_text(CONSUME_PY)
    return root


def _until(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _run(server: Server, run_id: str) -> dict[str, Any]:
    got = server.ame("runs", "get", run_id, "--json")
    assert got.returncode == 0, got.stderr
    return dict(json.loads(got.stdout))


def _data_sets(server: Server) -> dict[str, dict[str, Any]]:
    listed = server.ame("datasets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {d["name"]: d for d in json.loads(listed.stdout)}


def _detached(server: Server, project: Path, task: str) -> str:
    started = server.ame_in(project, "task", "run", task, "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]
    assert f"run {run_id} queued (waiting for data set 'corpus')" in started.stderr, started.stderr
    return run_id


def _ended(server: Server, run_id: str) -> dict[str, Any] | None:
    run = _run(server, run_id)
    return run if run["state"] in ("succeeded", "failed", "cancelled", "timed_out", "lost") else None


def _seen(shared: Path, who: str, run_id: str) -> dict[str, dict[str, int]]:
    return dict(json.loads((shared / f"{who}-{run_id}.json").read_text()))


def test_a_data_set_is_produced_once_shared_by_inode_and_kept_across_pushes(ame_server: Server, tmp_path: Path) -> None:
    server = ame_server
    server.start()
    shared = tmp_path / "shared"
    project = _project(tmp_path / "project", shared)

    # Two consumers at once: both wait for the one production, which blocks until the test says go.
    first = _detached(server, project, "consume-a")
    second = _detached(server, project, "consume-b")
    _until("the producer to start", (shared / "producing").exists)
    for run_id in (first, second):
        run = _run(server, run_id)
        assert run["state"] == "queued", run
        assert "waiting for data set 'corpus'" in run["reason"], run
    pending = _data_sets(server)["corpus"]
    assert pending["status"] in ("pending", "running"), pending
    assert pending["run_id"], pending
    assert _until("the production to be running", lambda: _data_sets(server)["corpus"]["status"] == "running")

    (shared / "go").write_text("")
    for run_id in (first, second):
        ended = _until(f"run {run_id} to end", partial(_ended, server, run_id))
        assert ended["state"] == "succeeded", ended
    assert len((shared / "productions").read_text().split()) == 1, "produced more than once"

    ready = _data_sets(server)["corpus"]
    assert ready["status"] == "ready", ready
    assert ready["file_count"] == 2 and ready["size_bytes"] == len("alpha beta gamma\n") + 256 * 64, ready
    assert len(ready["version_id"]) == 64, ready

    # One inode: both consumers' files and the launcher's cache entry.
    seen_a, seen_b = _seen(shared, "a", first), _seen(shared, "b", second)
    assert sorted(seen_a) == ["sub/numbers.bin", "words.txt"], seen_a
    assert seen_a == seen_b
    blobs = server.data_dir / "launcher" / "content" / "blobs"
    sha = hashlib.sha256(b"alpha beta gamma\n").hexdigest()
    assert (blobs / sha[:2] / sha).stat().st_ino == seen_a["words.txt"]["ino"]

    # An unrelated one-line change, pushed: the consumer runs with the same version, nothing is produced again.
    (project / "README.md").write_text("a line\n")
    again = server.ame_in(project, "task", "run", "consume-a")
    assert again.returncode == 0, again.stderr
    assert len((shared / "productions").read_text().split()) == 1, "an unrelated push produced it again"
    assert _data_sets(server)["corpus"]["version_id"] == ready["version_id"]

    # `ame datasets refresh` produces it again; a consumer after it waits for, and reads, the new production.
    (shared / "go").unlink()
    (shared / "producing").unlink()
    refreshed = server.ame_in(project, "datasets", "refresh", "corpus")
    assert refreshed.returncode == 0, refreshed.stderr
    _until("the second production to start", (shared / "producing").exists)
    (shared / "go").write_text("")
    _until(
        "the refreshed data set",
        lambda: _data_sets(server)["corpus"]["generation"] == 2 and _data_sets(server)["corpus"]["status"] == "ready",
    )
    assert len((shared / "productions").read_text().split()) == 2


def test_a_failed_producer_fails_its_consumers_with_the_reason(ame_server: Server, tmp_path: Path) -> None:
    server = ame_server
    server.start()
    project = _project(tmp_path / "project", tmp_path / "shared")

    failed = server.ame_in(project, "task", "run", "consume-broken")
    assert failed.returncode != 0
    run_id = _run_id_of_latest(server, "consume-broken")
    run = _run(server, run_id)
    assert run["state"] == "failed", run
    assert "data set 'broken' failed" in run["reason"], run
    assert "exited with code 3" in run["reason"], run
    broken = _data_sets(server)["broken"]
    assert broken["status"] == "failed", broken
    assert "ended failed" in broken["reason"], broken

    # A consumer submitted after the failure fails at once, with the same reason.
    later = server.ame_in(project, "task", "run", "consume-broken")
    assert later.returncode != 0
    assert "data set 'broken' failed" in later.stderr, later.stderr


def _run_id_of_latest(server: Server, task: str) -> str:
    listed = server.ame("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = [r for r in json.loads(listed.stdout) if r["spec"]["task"] == task]
    assert runs, listed.stdout
    return str(runs[0]["id"])


def _local(server: Server, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AME, "task", "run", "-l", *args], capture_output=True, text=True, env=server.env, timeout=120, cwd=project
    )


def test_local_runs_without_a_server_produce_once_and_link_from_the_home_cache(
    ame_server: Server, tmp_path: Path
) -> None:
    server = ame_server  # never started: its home and environment only, so no server is configured
    shared = tmp_path / "shared"
    project = _project(tmp_path / "project", shared)
    (shared / "go").write_text("")

    first = _local(server, project, "consume-a")
    assert first.returncode == 0, first.stderr
    assert "producing it with task 'fetch-corpus'" in first.stderr, first.stderr
    second = _local(server, project, "consume-b")
    assert second.returncode == 0, second.stderr
    assert len((shared / "productions").read_text().split()) == 1, "produced more than once"

    seen = [json.loads(p.read_text()) for p in sorted(shared.glob("[ab]-*.json"))]
    assert len(seen) == 2 and seen[0] == seen[1] and sorted(seen[0]) == ["sub/numbers.bin", "words.txt"], seen
    sha = hashlib.sha256(b"alpha beta gamma\n").hexdigest()
    cached = server.home / "data-sets" / "cache" / "blobs" / sha[:2] / sha
    assert cached.stat().st_ino == seen[0]["words.txt"]["ino"] == (project / "data/corpus/words.txt").stat().st_ino

    listed = subprocess.run(
        [*AME, "datasets", "list", "-l", "--json"], capture_output=True, text=True, env=server.env, cwd=project
    )
    assert listed.returncode == 0, listed.stderr
    corpus = {d["name"]: d for d in json.loads(listed.stdout)}["corpus"]
    assert corpus["status"] == "ready" and corpus["file_count"] == 2, corpus

    # A failed producer fails the consumer with the reason, and stays failed for the next one.
    broken = _local(server, project, "consume-broken")
    assert broken.returncode != 0
    assert "data set 'broken' failed" in broken.stderr, broken.stderr
    assert "never runs" not in broken.stdout


def test_local_runs_with_a_server_fetch_the_servers_version(ame_server: Server, tmp_path: Path) -> None:
    server = ame_server
    server.start()
    shared = tmp_path / "shared"
    project = _project(tmp_path / "project", shared)
    (shared / "go").write_text("")
    pushed = server.ame_in(project, "project", "push")
    assert pushed.returncode == 0, pushed.stderr

    first = _local(server, project, "consume-a")
    assert first.returncode == 0, first.stderr
    assert "from the server" in first.stderr and "2 fetched" in first.stderr, first.stderr
    second = _local(server, project, "consume-b")
    assert second.returncode == 0, second.stderr
    assert "0 fetched" in second.stderr, second.stderr
    # Produced once, on the server (the local runs never ran the producer).
    productions = (shared / "productions").read_text().split()
    assert len(productions) == 1, productions
    corpus = _data_sets(server)["corpus"]
    assert corpus["status"] == "ready" and corpus["run_id"] == productions[0], corpus

    sha = hashlib.sha256(b"alpha beta gamma\n").hexdigest()
    cached = server.home / "data-sets" / "cache" / "blobs" / sha[:2] / sha
    seen = [json.loads(p.read_text()) for p in sorted(shared.glob("[ab]-*.json"))]
    assert len(seen) == 2 and seen[0] == seen[1], seen
    assert cached.stat().st_ino == seen[0]["words.txt"]["ino"] == (project / "data/corpus/words.txt").stat().st_ino
