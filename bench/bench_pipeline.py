"""How soon a remote pipeline's step starts after its predecessors end, on the embedded default.

Starts `ame server` in a temporary AME home, submits a 50-step pipeline of `true` commands (custom executor:
no environment to build) and, once it has ended, reads every step's run from the registry. For each step after
the first stage: delay = the step's start (its `running` event, as the launcher reports it when the process is
spawned) minus the latest end among the steps of the stage before (their terminal events). That delay is the
whole chain: end event -> coordinator -> step request -> api (run recorded, admitted, launch published) ->
launcher (lease, working directory with the earlier steps' files, process spawned).

    uv run python bench/bench_pipeline.py [--steps 50] [--group 1] [--repeat 1]

`--group 5` runs the steps as stages of five parallel steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from embedded import embedded_server, server_token

from ame.domain import PIPELINE_STEP_LABEL, PipelineStage, PipelineStep, Run, RunSpec, RunState
from ame.sdk import Client


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000


def pipeline(steps: int, group: int) -> RunSpec:
    stages = []
    for first in range(0, steps, group):
        names = [f"step-{i:03d}" for i in range(first, min(first + group, steps))]
        stages.append(
            PipelineStage(
                steps=[PipelineStep(name=n, spec=RunSpec(project="bench", task=n, command="true")) for n in names]
            )
        )
    return RunSpec(project="bench", task="pipeline", pipeline=stages)


def run_once(client: Client, spec: RunSpec) -> tuple[list[float], list[float], float, Run]:
    submitted = time.monotonic()
    parent = client.submit_run(spec)
    deadline = time.monotonic() + 600
    while not (parent := client.get_run(parent.id)).state.terminal:
        if time.monotonic() > deadline:
            raise SystemExit(f"pipeline {parent.id} did not end in 10 minutes")
        time.sleep(0.2)
    makespan = time.monotonic() - submitted
    children = {
        run.spec.labels[PIPELINE_STEP_LABEL]: run for run in client.list_runs(parent_run_id=parent.id, limit=1000)
    }
    delays = []
    # The part of each delay until the step's run was recorded by the api (the coordinator's share and the bus).
    created = []
    previous_end = None
    for stage in spec.pipeline:
        runs = [children[step.name] for step in stage.steps]
        if previous_end is not None:
            for run in runs:
                assert run.started_at is not None
                delays.append((run.started_at - previous_end).total_seconds())
                created.append((run.created_at - previous_end).total_seconds())
        ends = [run.finished_at for run in runs if run.finished_at is not None]
        previous_end = max(ends)
    return delays, created, makespan, parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--group", type=int, default=1, help="Steps per stage (1: a sequential pipeline).")
    parser.add_argument("--repeat", type=int, default=1, help="Pipelines run one after another.")
    parser.add_argument("--set", action="append", default=[], metavar="AME_X=V", help="A server setting (repeatable).")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AME_")}
    env.update(item.split("=", 1) for item in args.set)
    spec = pipeline(args.steps, args.group)
    all_delays: list[float] = []
    all_created: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="ame-bench-pipeline-") as home,
        embedded_server(Path(home), env) as info,
        Client(info["grpc_target"], token=server_token(info)) as client,
    ):
        # One short pipeline first, so the launcher's first spawn and caches are not in the figures.
        run_once(client, pipeline(2, 1))
        for _ in range(args.repeat):
            delays, created, makespan, parent = run_once(client, spec)
            if parent.state != RunState.SUCCEEDED:
                raise SystemExit(f"pipeline {parent.id} {parent.state.value}: {parent.reason}")
            all_delays.extend(delays)
            all_created.extend(created)
            print(f"pipeline of {args.steps} steps ({len(spec.pipeline)} stages): makespan {makespan:.2f} s")
    print(_line("step start after its predecessors' end", all_delays))
    print(_line("  of which until its run was recorded", all_created))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; python {sys.version.split()[0]}")


def _line(name: str, values: list[float]) -> str:
    return (
        f"{name:40} p50 {pct(values, 50):6.1f} ms   p95 {pct(values, 95):6.1f} ms   max {max(values) * 1000:6.1f} ms"
        f"   (n={len(values)}, mean {statistics.mean(values) * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
