"""The seeds' task examples run on `ame server` with `ame task run NAME` exactly as with `ame task run -l NAME`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEEDS = Path(__file__).resolve().parents[2] / "libs" / "ame" / "tests" / "spec" / "fixtures" / "seed_001"

TRAIN_PY = """\
import os, sys
from pathlib import Path

import six

print("six", six.__version__)
print("rows:", len(Path("data/train.csv").read_text().splitlines()))
print("python", sys.version_info[0], sys.version_info[1])
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "home")
    s.home.mkdir()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _seed_project(root: Path, seed: str) -> Path:
    (root / "data").mkdir(parents=True)
    shutil.copy(SEEDS / seed, root / "ame.yml")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n3,4\n")
    (root / "requirements.txt").write_text("six==1.16.0\n")
    return root


def _both(server: Server, project: Path, task: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    remote = server.ame_in(project, "task", "run", task)
    local = server.ame_in(project, "task", "run", "-l", task)
    return remote, local


def test_seed_pip_and_custom_tasks_run_remotely_as_locally(server: Server, tmp_path: Path) -> None:
    server.start()
    expected = "six 1.16.0\nrows: 3\npython 3 11\n"

    pip_project = _seed_project(tmp_path / "seedpip", "04_executor_pip.yml")
    remote, local = _both(server, pip_project, "train_my_model")
    assert local.returncode == 0, local.stderr
    assert local.stdout == expected
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr

    # A failing command: the same exit code on both sides (the seed's environment block, set to fail).
    (pip_project / "ame.yml").write_text(
        (pip_project / "ame.yml").read_text() + "    environment:\n      - key: EXIT_CODE\n        val: '3'\n"
    )
    remote, local = _both(server, pip_project, "train_my_model")
    assert local.returncode == 3, local.stderr
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr
    assert "failed" in remote.stderr

    # `retries: 1`: on the server a second attempt of the same run (launched by the scheduler after a backoff), with
    # -l the runner's own retry; both print the task's output twice and exit with the last attempt's code.
    (pip_project / "ame.yml").write_text((pip_project / "ame.yml").read_text() + "    retries: 1\n")
    remote, local = _both(server, pip_project, "train_my_model")
    assert local.returncode == 3, local.stderr
    assert local.stdout == expected * 2
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr
    newest = json.loads(server.ame("runs", "list", "--json", "--limit", "1").stdout)[0]
    shown = json.loads(server.ame("runs", "get", newest["id"], "--json").stdout)
    assert (shown["state"], shown["attempt"]) == ("failed", 2)
    assert [(a["attempt"], a["state"], a["exit_code"]) for a in shown["attempts"]] == [
        (1, "failed", 3),
        (2, "failed", 3),
    ]

    # The custom executor with pythonVersion: the project's files are there, six is not (no environment set-up).
    custom_project = _seed_project(tmp_path / "seedcustom", "07_executor_custom.yml")
    (custom_project / "train.py").write_text(
        TRAIN_PY.replace("import six\n", "").replace('print("six", six.__version__)\n', "")
    )
    remote, local = _both(server, custom_project, "train_my_model")
    assert local.returncode == 0, local.stderr
    assert local.stdout == "rows: 3\npython 3 11\n"
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr

    # A timeout: 124 on both sides.
    (custom_project / "ame.yml").write_text(
        (custom_project / "ame.yml").read_text().replace("python train.py", "python -c 'import time; time.sleep(60)'")
        + "    timeout: 1s\n"
    )
    remote, local = _both(server, custom_project, "train_my_model")
    assert (remote.returncode, local.returncode) == (124, 124), (remote.stderr, local.stderr)
    assert server.stop() == 0
