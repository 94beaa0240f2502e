"""A real `mlflow server` (PyPI `mlflow`) for the slow model tests, in its own virtual environment.

The environment is built once with uv and kept across sessions (`AME_TEST_CACHE`, default `~/.cache/ame-tests`),
built beside its final place and renamed into it, so an interrupted build is never taken for a whole one. The
server pins the version the runner's `mlflow-skinny` pin has, so client and server speak the same API.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ame.runner.executors import MLFLOW_REQUIREMENT

MLFLOW_VERSION = MLFLOW_REQUIREMENT.split("==", 1)[1]
# mlflow 2.22 imports a pool SQLAlchemy 2.1 removed; its own bound (<3) lets the resolver take 2.1.
_CONSTRAINTS = ("sqlalchemy<2.1",)


def _cache_root() -> Path:
    return Path(os.environ.get("AME_TEST_CACHE", Path.home() / ".cache" / "ame-tests"))


def mlflow_venv() -> Path:
    """The virtual environment holding `mlflow==<the runner's pin>`, built on first use."""
    final = _cache_root() / f"mlflow-{MLFLOW_VERSION}-1"
    if (final / ".complete").exists():
        return final
    building = final.with_name(final.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", "3.11", str(building)], check=True, timeout=600)
    python = building / "bin" / "python"
    subprocess.run(
        [*uv, "pip", "install", "-q", "--python", str(python), f"mlflow=={MLFLOW_VERSION}", *_CONSTRAINTS],
        check=True,
        timeout=1200,
    )
    (building / ".complete").write_text(MLFLOW_VERSION)
    shutil.rmtree(final, ignore_errors=True)
    building.rename(final)
    return final


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[tuple[str, Path]]:
    """(tracking URI, the environment's python) of an `mlflow server` on a free port, stopped on exit."""
    venv = mlflow_venv()
    python = venv / "bin" / "python"
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "mlflow.log").open("ab")
    proc = subprocess.Popen(
        [
            str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination", str(workdir / "artifacts"),
        ],
        stdout=log,
        stderr=log,
        cwd=workdir,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (workdir / "mlflow.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health within 120 s"
            time.sleep(0.2)  # polling the server's start, not synchronising with AME
        yield uri, python
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
