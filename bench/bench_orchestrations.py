"""What seed 004's orchestrations cost on the embedded server.

Starts `ame server` (free ports, temporary home) and times, through `ame.Client()`:

- upload -> ready for a ZIP with `requirements.txt` (six==1.16.0): cold (the environment is built) and warm (a new
  version with the same requirements: the launcher's environment cache is hit);
- run_once -> its run's `success` as `task.status()` reports it, N times;
- the first printed line of a running task -> visible through `run.logs()`.

    uv run python bench/bench_orchestrations.py [--runs 10]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from embedded import embedded_server, server_token

MAIN_PY = """\
import ame, time
args = ame.task_args()
print("hello", args["n"])
if args.get("sleep"):
    time.sleep(args["sleep"])
"""


def _zip(main: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("main.py", main)
        out.writestr("requirements.txt", "six==1.16.0\n")
    return buffer.getvalue()


def _until(probe, timeout: float = 300.0) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not probe():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        time.sleep(0.02)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    with tempfile.TemporaryDirectory() as tmp, embedded_server(Path(tmp) / "home", env) as info:
        os.environ.update(AME_GRPC_TARGET=info["grpc_target"], AME_TOKEN=server_token(info))
        import ame

        wl = ame.Client()
        start = time.perf_counter()
        first = wl.upload_orchestration(bytes_buffer=_zip(MAIN_PY), name="bench")
        first.wait_for_packaging()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        wl.upload_orchestration(bytes_buffer=_zip(MAIN_PY + "# v2\n"), name="bench").wait_for_packaging()
        warm = time.perf_counter() - start
        print(f"upload -> ready: cold {cold:.2f} s, warm (cached environment) {warm:.2f} s")

        latencies = []
        for n in range(options.runs):
            task = first.run_once(name=f"run {n}", json_args={"n": n})
            latencies.append(_until(lambda task=task: task.status() in ("success", "failure")))
            assert task.status() == "success", task.last_runs()[0].logs()
        print(
            f"run_once -> success over {options.runs} runs: p50 {statistics.median(latencies):.2f} s, "
            f"max {max(latencies):.2f} s"
        )
        task = first.run_once(name="slow", json_args={"n": "slow", "sleep": 60})
        _until(lambda: bool(task.last_runs()) and task.last_runs()[0].status == "running")
        run = task.last_runs()[0]
        seen = _until(lambda: any(line.endswith("hello slow") for line in run.logs()))
        print(f"a running task's line visible through run.logs() {seen:.2f} s after the run was seen running")
        task.kill(cancel=True)
        wl.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
