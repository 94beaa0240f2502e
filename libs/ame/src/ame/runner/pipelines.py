"""Run a pipeline's stages: steps in order, parallel groups at once, first failure stops all.

A failing step cancels its running siblings (they end "cancelled") and every later step is
"skipped". The pipeline's own timeout cancels whatever runs and marks the pipeline "timed_out".
Concurrency is bounded by one semaphore for the whole run, taken by leaf steps only, so nested
pipelines cannot deadlock waiting on slots their own children need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ame.runner.results import StepResult

if TYPE_CHECKING:
    from ame.spec.resolved import ResolvedTask

__all__ = ["PipelineOutcome", "StepRunner", "linked_event", "run_pipeline"]

StepRunner = Callable[["ResolvedTask", str, asyncio.Event], Awaitable[StepResult]]
PipelineState = Literal["succeeded", "failed", "cancelled", "timed_out"]


@dataclass(frozen=True)
class PipelineOutcome:
    state: PipelineState
    steps: list[StepResult]


@contextlib.asynccontextmanager
async def linked_event(*parents: asyncio.Event) -> AsyncIterator[asyncio.Event]:
    """An event that is set whenever any parent is set, and can also be set on its own."""
    child = asyncio.Event()

    async def follow(parent: asyncio.Event) -> None:
        await parent.wait()
        child.set()

    followers = [asyncio.create_task(follow(parent)) for parent in parents]
    try:
        yield child
    finally:
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def run_pipeline(
    task: ResolvedTask,
    run_step: StepRunner,
    semaphore: asyncio.Semaphore,
    cancel: asyncio.Event,
    prefix: str = "",
) -> PipelineOutcome:
    timed_out = asyncio.Event()
    async with linked_event(cancel, timed_out) as stop:
        watchdog = None
        if task.timeout_seconds is not None:
            watchdog = asyncio.create_task(_expire(task.timeout_seconds, timed_out))
        try:
            steps, failed = await _run_stages(task, run_step, semaphore, stop, prefix)
        finally:
            if watchdog is not None:
                watchdog.cancel()
    if timed_out.is_set():
        state: PipelineState = "timed_out"
    elif cancel.is_set():
        state = "cancelled"
    elif failed:
        state = "failed"
    else:
        state = "succeeded"
    return PipelineOutcome(state, steps)


async def _expire(seconds: float, timed_out: asyncio.Event) -> None:
    await asyncio.sleep(seconds)
    timed_out.set()


async def _run_stages(
    task: ResolvedTask,
    run_step: StepRunner,
    semaphore: asyncio.Semaphore,
    stop: asyncio.Event,
    prefix: str,
) -> tuple[list[StepResult], bool]:
    results: list[StepResult] = []
    failed = False
    for stage in task.pipeline:
        if failed or stop.is_set():
            results.extend(
                StepResult(prefix + leaf_label, "skipped") for step in stage for leaf_label in _leaf_labels(step)
            )
            continue
        async with linked_event(stop) as stage_stop:

            async def run_one(step: ResolvedTask, stage_stop: asyncio.Event = stage_stop) -> list[StepResult]:
                label = prefix + step.name
                if step.pipeline:
                    outcome = await run_pipeline(step, run_step, semaphore, stage_stop, label + "/")
                    if outcome.state != "succeeded":
                        stage_stop.set()
                    return outcome.steps
                async with semaphore:
                    if stage_stop.is_set():
                        return [StepResult(label, "skipped")]
                    result = await run_step(step, label, stage_stop)
                if result.state != "succeeded":
                    # First failure: stop the siblings still running and anything not started.
                    stage_stop.set()
                return [result]

            stage_results = await asyncio.gather(*(run_one(step) for step in stage))
        for step_results in stage_results:
            results.extend(step_results)
        if any(result.state not in ("succeeded", "skipped") for step in stage_results for result in step):
            failed = True
    return results, failed


def _leaf_labels(step: ResolvedTask) -> list[str]:
    if not step.pipeline:
        return [step.name]
    return [f"{step.name}/{label}" for stage in step.pipeline for inner in stage for label in _leaf_labels(inner)]
