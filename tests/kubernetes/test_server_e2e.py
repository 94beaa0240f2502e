"""End to end: the CLI against `ame server --backend kubernetes`, pointed at the API emulator and the test
kubelet, runs the seed's GPU task (seed 001: 4 cpu, 10G memory, 30G storage, one NVIDIA GPU) as a pod."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ame_platform.storage import StorageSettings
from tests.e2e.test_ame_server import AME
from tests.kubernetes.conftest import Cluster
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SEED = Path(__file__).resolve().parents[2] / "libs" / "ame" / "tests" / "spec" / "fixtures" / "seed_001"
TRAIN_PY = """\
import os
from pathlib import Path
print("rows:", len(Path("data/train.csv").read_text().splitlines()))
print("run", os.environ["AME_RUN_ID"] != "", "in task", os.environ["AME_IN_TASK"])
"""


def _project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    seed = (SEED / "01_resources.yml").read_text().replace("!poetry", "!custom")
    # The seed's "node labels": the GPU model the task needs, a node selector on the GPU product label.
    seed = seed.replace(
        "nvidia.com/gpu: 1 # 1 Nvidia GPU",
        "nvidia.com/gpu: 1 # 1 Nvidia GPU\n      gpuModel: NVIDIA-H100-80GB-HBM3\n      vram: 79Gi",
    )
    assert "gpuModel" in seed
    (root / "ame.yml").write_text(seed)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n3,4\n")
    return root


async def test_the_cli_runs_the_seeds_gpu_task_as_a_pod(
    cluster: Cluster, s3_settings: StorageSettings, tmp_path: Path
) -> None:
    kubelet = cluster.steer()
    home = tmp_path / "home"
    home.mkdir()
    assert s3_settings.s3_secret_access_key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(
        AME_HOME=str(home),
        AME_CONFIG_DIR=str(home / "config"),
        AME_STORAGE_BACKEND="s3",
        AME_STORAGE_S3_ENDPOINT_URL=s3_settings.s3_endpoint_url or "",
        AME_STORAGE_S3_BUCKET=s3_settings.s3_bucket,
        AME_STORAGE_S3_REGION=s3_settings.s3_region,
        AME_STORAGE_S3_ACCESS_KEY_ID=s3_settings.s3_access_key_id or "",
        AME_STORAGE_S3_SECRET_ACCESS_KEY=s3_settings.s3_secret_access_key.get_secret_value(),
        AME_STORAGE_S3_ADDRESSING_STYLE="path",
        AME_STORAGE_S3_CREATE_BUCKET="true",
        AME_LAUNCHER_KUBERNETES_KUBECONFIG=str(cluster.kubeconfig),
        AME_LAUNCHER_KUBERNETES_NAMESPACE=cluster.namespace,
        AME_LAUNCHER_KUBERNETES_RECONNECT_DELAY="0.1",
    )
    log = home / "server.log"
    server = subprocess.Popen(
        [*AME, "server", "--backend", "kubernetes", "--rest-port", "0", "--grpc-port", "0"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        info = home / "server" / "server.json"
        await wait_until(lambda: info.exists() or server.poll() is not None, timeout=90, message="server.json")
        assert server.poll() is None, log.read_text()
        assert json.loads(info.read_text())
        project = _project(tmp_path / "seed-gpu")
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [*AME, "task", "run", "train_my_model"],
            capture_output=True,
            text=True,
            env=env,
            cwd=project,
            timeout=180,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, (done.stdout, done.stderr, log.read_text()[-3000:])
        assert "rows: 3" in done.stdout
        assert "run True in task 1" in done.stdout
        assert len(kubelet.started) == 1, kubelet.started
        assert cluster.km is not None
        pod = next(
            obj.raw
            for (res, ns, name), obj in cluster.km.objects.items()
            if name == kubelet.started[0] and res.plural == "pods"
        )
        main = pod["spec"]["containers"][0]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert main["resources"]["requests"] == {
            "cpu": "4",
            "memory": "10G",
            "ephemeral-storage": "30G",
            "nvidia.com/gpu": "1",
        }
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
            # 79Gi: an H100 "80 GB" reports 81559 MiB, which this accepts.
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["80895"]}
        ]
        assert elapsed < 180
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.to_thread(server.wait, 60)
