"""Benchmark: `ame validate` of a generated 500-task project with templates and pipelines.

Target: < 300 ms. Prints in-process load+resolve time and the wall time of the whole CLI
command (interpreter start, imports, load, resolve), next to the bare cost of starting
Python with the CLI's dependencies imported, so the spec's own share is visible.

Run: uv run python bench/bench_validate.py [--tasks 500] [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(tasks: int, templates: int = 20) -> str:
    """A project shaped like real ones: templates, env, secrets, schedules, pipelines."""
    lines = ["project: bench", "templates:"]
    for index in range(templates):
        lines += [
            f"  - name: template_{index}",
            "    resources:",
            f"      memory: {index + 1}Gi",
            "      cpu: 500m",
            "      nvidia.com/gpu: 1",
            "    secrets:",
            "      - !ame",
            "        key: blob_storage_key",
            "        injectAs: BLOB_KEY",
            "    environment:",
            "      - key: MODE",
            "        val: template",
        ]
    lines.append("tasks:")
    for index in range(tasks):
        if index % 10 == 9:  # every tenth task is a pipeline over the previous ones
            lines += [
                f"  - name: task_{index}",
                "    triggers:",
                f'      schedule: "{index % 60} 3 * * *"',
                "    timeout: 2h",
                "    pipeline:",
                f"      - taskRef: task_{index - 1}",
                f"      - - taskRef: task_{index - 2}",
                f"        - taskRef: task_{index - 3}",
                f"      - name: report_{index}",
                "        executor: !custom",
                "          command: ./report.sh",
            ]
            continue
        lines += [
            f"  - name: task_{index}",
            f"    fromTemplate: template_{index % templates}",
            "    executor:",
            "      !poetry",
            "      pythonVersion: 3.11",
            f"      command: python train_{index}.py --epochs 10",
            "    resources:",
            "      memory: 4Gi",
            "      storage: 30G",
            "    environment:",
            "      - key: TASK_INDEX",
            f"        val: '{index}'",
            "    artifacts:",
            "      paths: [models, metrics]",
            "    timeout: 1h30m",
            "    retries: 2",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    from ame.spec import load_project, resolve_task

    with tempfile.TemporaryDirectory() as directory:
        project_dir = Path(directory)
        text = generate(args.tasks)
        (project_dir / "ame.yml").write_text(text)
        print(f"project: {args.tasks} tasks, {len(text.splitlines())} lines, {len(text) // 1024} KiB")

        load_project(project_dir)  # warm-up: first use imports the YAML parser and croniter
        load_times, resolve_times = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            project = load_project(project_dir)  # includes resolving every task (reference checks)
            loaded = time.perf_counter()
            for name in project.task_names():
                resolve_task(project, name)
            load_times.append(loaded - started)
            resolve_times.append(time.perf_counter() - loaded)
        print(f"in-process load_project (parse + validate + check refs): median {_ms(load_times)}")
        print(f"in-process resolve_task for all {args.tasks} tasks:       median {_ms(resolve_times)}")
        print(
            "in-process total:                                        "
            f"median {_ms([a + b for a, b in zip(load_times, resolve_times, strict=True)])}"
        )

        ame = Path(sys.executable).with_name("ame")
        command = [str(ame), "validate", str(project_dir)] if ame.exists() else None
        if command is None:
            print("ame console script not found; skipping the CLI measurement")
            return
        baseline = [sys.executable, "-c", "import click, pydantic, ruamel.yaml"]
        cli_times = _wall(command, args.runs)
        base_times = _wall(baseline, args.runs)
        print(f"CLI `ame validate` (whole command, wall):                median {_ms(cli_times)}")
        print(f"  of which python + click + pydantic + ruamel imports:   median {_ms(base_times)}")


def _wall(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, check=True, capture_output=True)  # warm the OS file cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:7.1f} ms (min {min(times) * 1000:.1f})"


if __name__ == "__main__":
    main()
