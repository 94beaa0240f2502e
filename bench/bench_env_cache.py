"""Cold install vs warm-cache start of a local pip and poetry task running `python -c pass`.

Measures wall time from starting `ame task run -l NAME` to its exit, in a fresh AME home (so the
first run installs), then the median of several warm runs (target: <= 1 s).

Run: uv run python bench/bench_env_cache.py [--warm-runs 5] [--python 3.11]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ame.runner.home import AmeHome
from ame.runner.process import OutputSink, StreamName
from ame.runner.setup_steps import SetupContext, run_setup_step
from ame.runner.tools import provision_tool

# The simple index is named explicitly: some networks (this CI's) block PyPI's JSON API, which
# poetry's default source needs for locking.
PYPROJECT = """\
[project]
name = "bench"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["six>=1.16"]

[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "pypi-simple"
url = "https://pypi.org/simple/"
priority = "primary"
"""


def ame_yml(python: str) -> str:
    return f"""\
tasks:
  - name: pip_task
    executor: !pip
      pythonVersion: "{python}"
      command: python -c pass
  - name: poetry_task
    executor: !poetry
      pythonVersion: "{python}"
      command: python -c pass
"""


class _Quiet:
    async def started(self, pid: int) -> None:
        pass

    async def line(self, stream: StreamName, text: str) -> None:
        pass


def ame_command() -> list[str]:
    script = Path(sys.executable).with_name("ame")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ame.cli.main"]


def timed_run(project: Path, task: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [*ame_command(), "task", "run", "-l", task, "-p", str(project)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{task} failed ({completed.returncode}):\n{completed.stderr}")
    return elapsed


async def lock_poetry_project(home: AmeHome, project: Path, env: dict[str, str]) -> None:
    sink: OutputSink = _Quiet()
    context = SetupContext(home, project, env, sink)
    async with provision_tool("poetry", context) as poetry:
        lock_env = {**env, "POETRY_VIRTUALENVS_PATH": str(home.root / "lock-venvs")}
        await run_setup_step(context, [str(poetry), "lock"], env=lock_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ame-bench-"))
    try:
        home = AmeHome(workdir / "home")
        project = workdir / "project"
        project.mkdir()
        (project / "ame.yml").write_text(ame_yml(args.python))
        (project / "requirements.txt").write_text("six\n")
        (project / "pyproject.toml").write_text(PYPROJECT)
        env = {**os.environ, "AME_HOME": str(home.root), "UV_PYTHON_DOWNLOADS": "never"}
        # Measure what users see: Python caching bytecode as usual. (Some CI images set
        # PYTHONDONTWRITEBYTECODE, which makes every start recompile AME and its dependencies.)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # Tool provisioning and locking are one-off project setup, not part of either figure.
        asyncio.run(lock_poetry_project(home, project, env))

        print(f"python {args.python}, AME_HOME {home.root}, {args.warm_runs} warm runs each")
        print(f"{'task':<12} {'cold (install)':>15} {'warm p50':>10} {'warm max':>10}  target warm <= 1 s")
        for task in ("pip_task", "poetry_task"):
            cold = timed_run(project, task, env)
            warm = [timed_run(project, task, env) for _ in range(args.warm_runs)]
            p50 = statistics.median(warm)
            verdict = "ok" if p50 <= 1.0 else "MISSED"
            print(f"{task:<12} {cold:>14.2f}s {p50:>9.3f}s {max(warm):>9.3f}s  {verdict}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
