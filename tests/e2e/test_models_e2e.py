"""Models on `ame server`, via the CLI: `ame model train NAME` runs the training task, then the validation task with
the training run's artifacts in its working directory; `ame model list` shows the latest validated version."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ame_server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AME_YML = """\
project: models_demo
models:
  - name: recommender
    training:
      task:
        taskRef: train
    validationTask:
      name: validate
      executor:
        !custom
        command: {python} validate.py
tasks:
  - name: train
    executor:
      !custom
      command: {python} train.py
    artifacts:
      paths:
        - model.txt
"""

TRAIN_PY = """\
import os
from pathlib import Path

quality = Path("quality.txt").read_text().strip()
Path("model.txt").write_text(quality)
print("trained", os.environ["AME_MODEL_NAME"], "version", os.environ["AME_MODEL_VERSION"], "quality", quality)
"""

VALIDATE_PY = """\
import sys
from pathlib import Path

quality = float(Path("model.txt").read_text())
print("validating a model of quality", quality)
sys.exit(0 if quality >= 0.8 else 1)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "home")
    s.home.mkdir()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _project(root: Path, quality: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ame.yml").write_text(AME_YML.format(python=sys.executable))
    (root / "train.py").write_text(TRAIN_PY)
    (root / "validate.py").write_text(VALIDATE_PY)
    (root / "quality.txt").write_text(quality + "\n")
    return root


def test_v1_validated_then_v2_failing_validation_leaves_v1_the_latest_validated(server: Server, tmp_path: Path) -> None:
    server.start()
    project = _project(tmp_path / "demo", "0.9")

    first = server.ame_in(project, "model", "train", "recommender")
    assert first.returncode == 0, first.stderr
    assert "trained recommender version 1 quality 0.9\n" in first.stdout
    # The validation run found the training run's artifact (model.txt is no file of the project).
    assert "validating a model of quality 0.9\n" in first.stdout
    assert "model recommender version 1: validated" in first.stderr

    (project / "quality.txt").write_text("0.5\n")
    second = server.ame_in(project, "model", "train", "recommender")
    assert second.returncode == 1, second.stderr
    assert "validating a model of quality 0.5\n" in second.stdout
    assert "model recommender version 2: failed (validation failed)" in second.stderr

    listed = server.ame_in(project, "model", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "recommender" in line)
    assert row.split()[:3] == ["models_demo", "recommender", "v1"], listed.stdout
    assert row.endswith("v2 failed (validation failed)"), listed.stdout

    # A model the file does not have is a 404 naming it, and nothing is trained.
    unknown = server.ame_in(project, "model", "train", "recomender")
    assert unknown.returncode == 1
    assert "no model named 'recomender'" in unknown.stderr and "did you mean 'recommender'" in unknown.stderr


MLFLOW_TRAIN_PY = """\
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

print("tracking", os.environ["MLFLOW_TRACKING_URI"])
mlflow.set_experiment("models_demo")
with mlflow.start_run() as run:
    mlflow.set_tag("ame.run_id", os.environ["AME_RUN_ID"])
    mlflow.log_metric("quality", 0.9)
client = MlflowClient()
name = os.environ["AME_MODEL_NAME"]
if not client.search_registered_models(filter_string=f"name='{name}'"):
    client.create_registered_model(name)
version = client.create_model_version(name, source=run.info.artifact_uri + "/model", run_id=run.info.run_id)
print("registered", name, "version", version.version)
Path("model.txt").write_text("0.9")
"""


# The first run of a machine builds the mlflow environment (minutes); later ones reuse it.
@pytest.mark.timeout(1200)
def test_runs_get_the_mlflow_server_and_a_version_links_to_its_registry_version(server: Server, tmp_path: Path) -> None:
    from tests.e2e.mlflow_harness import mlflow_server

    with mlflow_server(tmp_path / "mlflow") as (uri, mlflow_python):
        server.extra_env["AME_MLFLOW_TRACKING_URI"] = uri
        server.start()
        project = _project(tmp_path / "demo", "0.9")
        (project / "train.py").write_text(MLFLOW_TRAIN_PY)
        (project / "ame.yml").write_text(
            (project / "ame.yml").read_text().replace(f"{sys.executable} train.py", f"{mlflow_python} train.py")
        )

        trained = server.ame_in(project, "model", "train", "recommender")
        assert trained.returncode == 0, trained.stderr
        assert f"tracking {uri}\n" in trained.stdout
        assert "registered recommender version 1\n" in trained.stdout
        assert "model recommender version 1: validated, MLflow registry version 1" in trained.stderr

        listed = server.ame_in(project, "model", "list")
        row = next(line for line in listed.stdout.splitlines() if "recommender" in line)
        assert row.split()[:4] == ["models_demo", "recommender", "v1", "1"], listed.stdout
