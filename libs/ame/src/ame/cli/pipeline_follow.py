"""Following a remote pipeline as `-l` shows a local one: every step's output live, prefixed `[step]`, then the
steps table, and the exit code `-l` would give.

A pipeline run is a parent whose steps are child runs (created by the server's coordinator as each stage
starts). The parent is polled for its children; each child's output is followed in a thread of its own, so
parallel steps interleave line by line as they do locally.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, cast

from ame.domain import PIPELINE_STEP_LABEL, RunState
from ame.run_specs import pipeline_labels

if TYPE_CHECKING:
    from ame.domain import LogLine, Run
    from ame.runner.results import RunState as StepState
    from ame.sdk import Client

__all__ = ["follow_pipeline", "pipeline_exit_code", "step_runs", "steps_table"]

_POLL_SECONDS = 0.2
_STATE_EXIT = {"cancelled": 130, "timed_out": 124, "lost": 1}


def step_label(run: Run) -> str:
    return run.spec.labels.get(PIPELINE_STEP_LABEL, run.spec.task)


def pipeline_exit_code(parent: Run) -> int:
    """As `-l`: 0, the failed step's exit code, 130 when cancelled, 124 when timed out."""
    if parent.state == RunState.SUCCEEDED:
        return 0
    return _STATE_EXIT.get(parent.state.value, parent.exit_code or 1)


def children(client: Client, parent_id: str) -> list[Run]:
    return client.list_runs(parent_run_id=parent_id, limit=1000)


def step_runs(client: Client, parent: Run) -> dict[str, Run]:
    """Each step's run by label: the parent's own children, then (for a resumed pipeline) the runs of the
    pipelines it resumed, for the steps it reused."""
    found: dict[str, Run] = {}
    current: Run | None = parent
    for _ in range(100):
        if current is None:
            break
        for run in children(client, current.id):
            found.setdefault(step_label(run), run)
        current = client.get_run(current.spec.resume_from) if current.spec.resume_from else None
    return found


def steps_table(parent: Run, runs: dict[str, Run]) -> str:
    """The table `-l` prints after a pipeline: step, state, duration, exit code, reason."""
    from ame.runner.console import format_summary
    from ame.runner.results import RunResult, StepResult

    steps = []
    for label in pipeline_labels(parent.spec):
        run = runs.get(label)
        if run is None:
            state = "skipped" if parent.state.terminal else "pending"
            steps.append(StepResult(label, cast("StepState", state)))
            continue
        steps.append(
            StepResult(
                label,
                cast("StepState", run.state.value),
                exit_code=run.exit_code,
                started_at=_ts(run.started_at),
                finished_at=_ts(run.finished_at),
                reason=(run.reason or None) if run.parent_run_id == parent.id else f"reused from run {run.id}",
                attempts=run.attempt,
            )
        )
    started = _ts(parent.started_at) or _ts(parent.created_at) or 0.0
    result = RunResult(
        run_id=parent.id,
        project=parent.spec.project,
        task=parent.spec.task,
        state=cast("StepState", parent.state.value),
        exit_code=pipeline_exit_code(parent) if parent.state.terminal else 0,
        started_at=started,
        finished_at=_ts(parent.finished_at) or time.time(),
        artifact_prefix="",
        steps=steps,
        reason=parent.reason or None,
    )
    return format_summary(result)


def _ts(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


class _Printer:
    """Writes prefixed lines from several threads, one batch at a time, keeping stdout and stderr apart."""

    def __init__(self, width: int) -> None:
        self._width = width
        self._lock = threading.Lock()

    def prefix(self, label: str) -> str:
        return f"[{label}]".ljust(self._width + 2) + " "

    def lines(self, label: str, lines: list[LogLine]) -> None:
        prefix = self.prefix(label)
        with self._lock:
            for line in lines:
                out = sys.stdout if line.stream == "stdout" else sys.stderr
                note = "ame: " if line.stream == "system" and not line.text.startswith("ame:") else ""
                out.write(f"{prefix}{note}{line.text}\n")
            sys.stdout.flush()
            sys.stderr.flush()


def follow_pipeline(client: Client, parent_id: str) -> int:
    """Print every step's output as it comes, then the steps table; returns the pipeline's exit code."""
    from ame.domain import LogEnd

    parent = client.get_run(parent_id)
    labels = pipeline_labels(parent.spec)
    printer = _Printer(max((len(label) for label in labels), default=0))
    stage_of = {step.name: number for number, stage in enumerate(parent.spec.pipeline) for step in stage.steps}
    followers: dict[str, tuple[int, threading.Thread]] = {}

    def follow_step(run_id: str, label: str) -> None:
        try:
            for batch in client.follow_log_batches(run_id):
                if isinstance(batch, LogEnd):
                    return
                printer.lines(label, batch)
        except Exception as exc:  # one step's follower must not end the others
            sys.stderr.write(f"{printer.prefix(label)}ame: stopped following this step: {exc}\n")

    while True:
        parent = client.get_run(parent_id)
        runs = children(client, parent_id)
        for run in sorted(runs, key=lambda r: stage_of.get(step_label(r), 0)):
            if run.id in followers:
                continue
            stage = stage_of.get(step_label(run), 0)
            # As `-l` prints them: a stage's output after the whole output of the stages before it (a follower
            # that lags must not let the next stage's lines in first); a parallel group's steps interleave.
            for earlier, thread in list(followers.values()):
                if earlier < stage:
                    thread.join()
            thread = threading.Thread(target=follow_step, args=(run.id, step_label(run)), daemon=True)
            followers[run.id] = (stage, thread)
            thread.start()
        if parent.state.terminal:
            break
        # Not synchronisation: how often a person's terminal learns that a new stage started.
        time.sleep(_POLL_SECONDS)
    for _, thread in followers.values():
        thread.join()
    sys.stderr.write(steps_table(parent, step_runs(client, parent)) + "\n")
    sys.stderr.flush()
    return pipeline_exit_code(parent)
