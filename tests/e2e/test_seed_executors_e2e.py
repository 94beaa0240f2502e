"""The seeds' examples, every executor, run on `ame server` (`ame task run NAME`) exactly as with `-l`.

Each `ame` is a separate process, as a user runs it. The projects are the seed's task examples
(libs/ame/tests/spec/fixtures/seed_001, from the Tasks guide) with a `train.py` that imports a real dependency
(`six`, installed from the package index into each executor's environment) and the repository's
examples/hello. The server is a pretend two-GPU host (`AME_LAUNCHER_GPUS`, a 16Gi and an 80Gi GPU), and so is
the CLI's `-l` (`AME_GPUS`).

Environments are built twice per executor (the CLI's home and the launcher's are separate, as on a real
server); uv's download cache makes the second build a local install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import AME, Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "libs" / "ame" / "tests" / "spec" / "fixtures" / "seed_001"
LOCKED = Path(__file__).resolve().parent / "fixtures" / "seed_projects"
EXAMPLES = REPO / "examples"
# A first build of an environment installs a tool (poetry, pipenv) or mlflow-skinny from the index.
BUILD_TIMEOUT = 600

TRAIN_PY = """\
import os, sys
from pathlib import Path

import six

print("six", six.__version__)
print("rows:", len(Path("data/train.csv").read_text().splitlines()))
print("python", sys.version_info[0], sys.version_info[1])
print("SOME_VAR", os.environ.get("SOME_VAR", "-"))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""
EXPECTED = "six 1.16.0\nrows: 3\npython 3 11\nSOME_VAR -\n"

MLPROJECT = """\
name: seed
python_env: python_env.yaml
entry_points:
  main:
    command: "python train.py"
"""
PYTHON_ENV = """\
python: "3.11"
build_dependencies: [pip]
dependencies: [six==1.16.0]
"""

SEED_FILES = {
    "pip": "04_executor_pip.yml",
    "poetry": "03_executor_poetry.yml",
    "pipenv": "05_executor_pipenv.yml",
    "mlflow": "06_executor_mlflow.yml",
    "custom": "07_executor_custom.yml",
}


class Cli:
    """`ame` processes against one `ame server`, with a longer limit than Server.ame_in for first builds."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def run(
        self, project: Path, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AME, *args],
            capture_output=True,
            text=True,
            env=self.server.env | (extra_env or {}),
            timeout=BUILD_TIMEOUT,
            cwd=project,
        )

    def both(
        self, project: Path, task: str
    ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        """The task run remotely, then with -l."""
        return self.run(project, "task", "run", task), self.run(project, "task", "run", "-l", task)

    def popen(self, project: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*AME, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.server.env,
            cwd=project,
        )


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    server = Server(tmp_path_factory.mktemp("seed-e2e") / "home")
    # A directory of mode 0o755 (mktemp's are 0o700), as Server users make it: PostgreSQL runs as another user.
    server.home.mkdir()
    # GPU 0 has 16Gi, GPU 1 80Gi (what nvidia-smi would say on a real host).
    server.extra_env = {
        "AME_LAUNCHER_GPUS": "0,1",
        "AME_GPUS": "0,1",
        "AME_LAUNCHER_GPU_MEMORY": "0=16Gi,1=80Gi",
        "AME_GPU_MEMORY": "0=16Gi,1=80Gi",
    }
    server.start()
    yield Cli(server)
    try:
        assert server.stop() == 0, server.log.read_text()[-4000:]
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _seed_project(root: Path, kind: str, seed: str | None = None) -> Path:
    (root / "data").mkdir(parents=True)
    shutil.copy(SEEDS / (seed or SEED_FILES[kind]), root / "ame.yml")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n3,4\n")
    if kind == "pip":
        (root / "requirements.txt").write_text("six==1.16.0\n")
    elif kind in ("poetry", "pipenv"):
        for file in (LOCKED / kind).iterdir():
            shutil.copy(file, root / file.name)
    elif kind == "mlflow":
        (root / "MLproject").write_text(MLPROJECT)
        (root / "python_env.yaml").write_text(PYTHON_ENV)
    else:
        # The custom executor sets up nothing: its task uses only the standard library.
        (root / "train.py").write_text(
            TRAIN_PY.replace("import six\n", "").replace('print("six", six.__version__)\n', "")
        )
    return root


def _append_to_task(project: Path, yaml_lines: str) -> None:
    (project / "ame.yml").write_text((project / "ame.yml").read_text() + yaml_lines)


@pytest.mark.parametrize("kind", list(SEED_FILES))
def test_every_executor_runs_remotely_as_locally(cli: Cli, tmp_path: Path, kind: str) -> None:
    project = _seed_project(tmp_path / f"seed-{kind}", kind)
    expected = EXPECTED if kind != "custom" else EXPECTED.replace("six 1.16.0\n", "")

    remote, local = cli.both(project, "train_my_model")
    assert local.returncode == 0, local.stderr
    assert local.stdout == expected
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr

    # A failing command: the same output and the same exit code on both sides.
    _append_to_task(project, "    environment:\n      - key: EXIT_CODE\n        val: '3'\n")
    remote, local = cli.both(project, "train_my_model")
    assert local.returncode == 3, local.stderr
    assert local.stdout == expected
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr
    assert "failed" in remote.stderr


@pytest.mark.parametrize(
    ("seed", "some_var"),
    [("00_minimal.yml", "-"), ("01_resources.yml", "-"), ("24_environment.yml", "SOME_VAL")],
)
def test_the_other_runnable_seed_examples_run_remotely_as_locally(
    cli: Cli, tmp_path: Path, seed: str, some_var: str
) -> None:
    """The guide's minimal task, its resources (10G memory, 4 cpu on 2 cores, 1 of the 2 pretend GPUs) and
    its environment variable, all `!poetry` tasks."""
    project = _seed_project(tmp_path / "seed", "poetry", seed)
    remote, local = cli.both(project, "train_my_model")
    assert local.returncode == 0, local.stderr
    assert local.stdout == EXPECTED.replace("SOME_VAR -", f"SOME_VAR {some_var}")
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr


@pytest.mark.parametrize("task", ["hello", "train", "prepare_a"])
def test_the_repository_examples_run_remotely_as_locally(cli: Cli, tmp_path: Path, task: str) -> None:
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", project)
    remote, local = cli.both(project, task)
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip()
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr


def test_a_timeout_exits_124_on_both_sides(cli: Cli, tmp_path: Path) -> None:
    project = _seed_project(tmp_path / "seed-timeout", "custom")
    (project / "ame.yml").write_text(
        (project / "ame.yml").read_text().replace("python train.py", "python -c 'import time; time.sleep(120)'")
        + "    timeout: 1s\n"
    )
    remote, local = cli.both(project, "train_my_model")
    assert (remote.returncode, local.returncode) == (124, 124), (remote.stderr, local.stderr)


def test_an_ignored_100_mb_file_is_not_uploaded(cli: Cli, tmp_path: Path) -> None:
    project = _seed_project(tmp_path / "seed-ignored", "custom")
    (project / ".gitignore").write_text("big.bin\n")
    subprocess.run(["truncate", "-s", "100M", str(project / "big.bin")], check=True)
    _append_to_task(
        project,
        "  - name: look\n    executor:\n      !custom\n"
        "      command: python3 -c \"import os; print('big.bin there:', os.path.exists('big.bin'))\"\n",
    )

    pushed = cli.run(project, "project", "push", "--json")
    assert pushed.returncode == 0, pushed.stderr
    figures = json.loads(pushed.stdout)
    assert figures["total_files"] == 4  # ame.yml, .gitignore, train.py, data/train.csv
    assert 0 < figures["total_bytes"] < 10_000
    assert figures["uploaded_bytes"] <= figures["total_bytes"]

    remote = cli.run(project, "task", "run", "look")
    assert (remote.returncode, remote.stdout) == (0, "big.bin there: False\n"), remote.stderr
    again = json.loads(cli.run(project, "project", "push", "--json").stdout)
    assert (again["uploaded_files"], again["uploaded_bytes"]) == (0, 0)
    # Nothing the server keeps is the size of the ignored file.
    stored = [p for p in cli.server.data_dir.rglob("*") if p.is_file() and p.stat().st_size >= 100 * 2**20]
    assert stored == []


GPU_TASK = """\
  - name: gpu
    executor:
      !custom
      command: python3 rendezvous.py
    resources:
      nvidia.com/gpu: 1
"""
# Each run announces itself, then waits (with a deadline) until the other has too: the two runs provably hold
# their GPUs at the same time, so disjoint devices are not the luck of running one after the other.
RENDEZVOUS_PY = """\
import os, sys, time
from pathlib import Path

meeting = Path(os.environ["MEETING"])
(meeting / str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "?"))
deadline = time.monotonic() + 60
while len(list(meeting.iterdir())) < 2:
    if time.monotonic() > deadline:
        sys.exit("the other run never started")
    time.sleep(0.05)
print("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "?"))
"""


@pytest.mark.parametrize("side", ["remote", "local"])
def test_two_one_gpu_runs_get_disjoint_devices(cli: Cli, tmp_path: Path, side: str) -> None:
    project = _seed_project(tmp_path / f"seed-gpu-{side}", "custom")
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    _append_to_task(project, GPU_TASK + f"    environment:\n      - key: MEETING\n        val: {meeting}\n")
    (project / "rendezvous.py").write_text(RENDEZVOUS_PY)
    args = ["task", "run", "gpu"] if side == "remote" else ["task", "run", "-l", "gpu"]
    if side == "remote":
        # Push first, so the two runs do not race to upload the same version (that is tested elsewhere).
        assert cli.run(project, "project", "push").returncode == 0
    runs = [cli.popen(project, *args) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    devices = sorted(out.strip() for out, _ in outputs)
    assert devices == ["gpu 0", "gpu 1"], outputs


@pytest.mark.parametrize("side", ["remote", "local"])
def test_seed_003_vram_gets_the_gpu_with_that_much_memory(cli: Cli, tmp_path: Path, side: str) -> None:
    project = _seed_project(tmp_path / f"seed-vram-{side}", "custom")
    # Seed 003's training step asks for `gpus: 1, vram: 24Gi`: only GPU 1 (80Gi) has that much.
    _append_to_task(
        project,
        "  - name: train\n    executor:\n      !custom\n"
        "      command: python3 -c \"import os; print('gpu', os.environ['CUDA_VISIBLE_DEVICES'])\"\n"
        "    resources:\n      gpus: 1\n      vram: 24Gi\n",
    )
    args = ["task", "run", "train"] if side == "remote" else ["task", "run", "-l", "train"]
    done = cli.run(project, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "gpu 1", (done.stdout, done.stderr)
