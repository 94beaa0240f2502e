"""`ame task run NAME` against `ame server` brings the run's artifacts back into the project directory, on the
local object store and on S3; a file edited here while the run ran is kept, the run's version saved beside it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ame_platform.storage import StorageSettings
from tests.e2e.test_ame_server import AME, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AME_YML = """\
project: artifacts-e2e
tasks:
  - name: train
    executor: !custom
      command: python train.py
    environment:
      - key: SHARED
        val: {shared}
    artifacts:
      paths: [model.pkl, out]
      saveChangedFiles: true
"""

# Writes the artifacts, says so through a file the test watches, and waits for the test's go-ahead (a file too),
# so the test can edit the project while the run is under way without sleeping.
TRAIN_PY = """\
import os, time
from pathlib import Path

shared = Path(os.environ["SHARED"])
token = str(time.time_ns())
Path("model.pkl").write_text("model " + token + "\\n")
Path("out").mkdir(exist_ok=True)
Path("out/metrics.json").write_text('{"loss": 0.5}')
Path("params.txt").write_text("learned by the run\\n")
print("token", token, flush=True)
(shared / "written").write_text(os.environ["AME_RUN_ID"])
deadline = time.monotonic() + 60
while not (shared / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
(shared / "written").unlink()
(shared / "go").unlink(missing_ok=True)
"""


@pytest.fixture(params=["local", "s3"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "home")
    s.home.mkdir()
    if request.param == "s3":
        settings: StorageSettings = request.getfixturevalue("s3_settings")
        s.extra_env.update(
            AME_STORAGE_BACKEND="s3",
            AME_STORAGE_S3_ENDPOINT_URL=str(settings.s3_endpoint_url),
            AME_STORAGE_S3_BUCKET=settings.s3_bucket,
            AME_STORAGE_S3_REGION=settings.s3_region,
            AME_STORAGE_S3_ACCESS_KEY_ID="testing",
            AME_STORAGE_S3_SECRET_ACCESS_KEY="testing",
            AME_STORAGE_S3_CREATE_BUCKET="true",
            AME_STORAGE_S3_ADDRESSING_STYLE="path",
        )
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _project(root: Path, shared: Path) -> Path:
    root.mkdir(parents=True)
    shared.mkdir(parents=True)
    (root / "ame.yml").write_text(AME_YML.format(shared=shared))
    (root / "train.py").write_text(TRAIN_PY)
    (root / "params.txt").write_text("as pushed\n")
    (root / ".gitignore").write_text("model.pkl\nout/\n")
    return root


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.05)
    return path.read_text()


def _token(stdout: str) -> str:
    return next(line.split()[1] for line in stdout.splitlines() if line.startswith("token "))


def test_artifacts_come_back_and_local_edits_are_kept(server: Server, tmp_path: Path) -> None:
    server.start()
    shared = tmp_path / "shared"
    project = _project(tmp_path / "project", shared)

    # A plain run: the artifacts arrive, and the tracked file the run changed (unchanged here) is replaced.
    (shared / "go").write_text("")
    first = server.ame_in(project, "task", "run", "train")
    assert first.returncode == 0, first.stderr
    assert (project / "model.pkl").read_text() == f"model {_token(first.stdout)}\n"
    assert (project / "out" / "metrics.json").read_text() == '{"loss": 0.5}'
    assert (project / "params.txt").read_text() == "learned by the run\n"
    assert "artifact(s) downloaded" in first.stderr

    # Edited here while the run runs: params.txt (pushed) and model.pkl (ignored, written after the push) are kept.
    (project / "params.txt").write_text("as pushed\n")
    proc = subprocess.Popen(
        [*AME, "task", "run", "train"],
        cwd=project,
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _wait_for(shared / "written", proc)
        (project / "params.txt").write_text("my local edit\n")
        (project / "model.pkl").write_text("my own model\n")
        (shared / "go").write_text("")
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    suffix = f".ame-{run_id[:8]}"
    assert (project / "params.txt").read_text() == "my local edit\n"
    assert (project / f"params.txt{suffix}").read_text() == "learned by the run\n"
    assert (project / "model.pkl").read_text() == "my own model\n"
    assert (project / f"model.pkl{suffix}").read_text() == f"model {_token(stdout)}\n"
    assert f"params.txt changed here since the push and was kept; the run's version is in params.txt{suffix}" in stderr

    # The same artifacts through `ame artifacts`, and --no-download leaves the directory alone.
    listed = server.ame_in(project, "artifacts", "list", run_id)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [
        "model.pkl",
        "out/metrics.json",
        "params.txt",
    ]
    got = server.ame_in(project, "artifacts", "get", run_id, "out", "--dest", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "dl" / "out" / "metrics.json").read_text() == '{"loss": 0.5}'
    assert not (tmp_path / "dl" / "model.pkl").exists()
    (project / "out" / "metrics.json").unlink()
    (shared / "go").write_text("")
    quiet = server.ame_in(project, "task", "run", "train", "--no-download")
    assert quiet.returncode == 0, quiet.stderr
    assert not (project / "out" / "metrics.json").exists()
    missing = server.ame_in(project, "artifacts", "list", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    assert server.stop() == 0
