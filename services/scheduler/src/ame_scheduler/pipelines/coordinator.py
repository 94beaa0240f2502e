"""The pipeline coordinator: runs a pipeline's steps as child runs, stage after stage, driven by run events.

It keeps no state in memory (beyond decoded specs, which never change). Each event (a pipeline submitted, a
step's run changing state, a cancel) is handled in one transaction under the pipeline's row lock: the step's new
state is recorded, the next decision is taken (submit the next stage, cancel the running siblings of a failed
step and skip what never started, end the pipeline) and the messages it implies are written to `pipeline_outbox`
in the same transaction. They are published after the commit, never while a row lock is held; a relay publishes
those a replica left behind. So any number of replicas can share the consumers, and a redelivered event or a
restart decides nothing twice:

* a step's request carries `Nats-Msg-Id: pipeline:<parent>:<step>`, which is also its run's idempotency key at
  the api, and the child's run id, chosen here when the pipeline is recorded;
* a step that ended is never changed again, and a stage is submitted only while its steps are `pending`.

A step's files carry over: every step saves its new and changed files (`saveChangedFiles`), and each step's
spec lists the saved files of every earlier step that succeeded as layers, in step order (a parallel group in
declaration order), which the launcher lays over the project version before the step starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from ame import bus_messages
from ame.codecs import StateEvent
from ame.domain import PIPELINE_PARENT_LABEL, PIPELINE_STEP_LABEL, FileLayer, RunSpec, RunState, retry_follows
from ame_platform.bus.consumer import Poison
from ame_platform.db import Connection
from ame_platform.runtime import Runtime
from ame_scheduler import convert
from ame_scheduler.pipelines import store
from ame_scheduler.pipelines.store import ACTIVE_STEP_STATES, ENDED_BADLY, Outgoing, Pipeline
from ame_scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

__all__ = ["Coordinator"]


# A change to a pipeline under its row lock; it returns whether a decision may follow from it.
Change = Callable[[Connection, Pipeline], Awaitable[bool]]
# Decoded pipeline specs kept in memory. A pipeline's spec is written once, when it is recorded, so what was
# decoded stays true; decoding a 50-step spec costs milliseconds, and every step event needs it.
_KEPT_SPECS = 256


class Coordinator:
    def __init__(self, runtime: Runtime, settings: SchedulerSettings) -> None:
        self._rt = runtime
        self._settings = settings
        self._specs: OrderedDict[str, RunSpec] = OrderedDict()

    # Consumers ------------------------------------------------------------------------------------------

    async def handle_started(self, msg: Msg) -> None:
        """PipelineStarted: record the pipeline and its steps, mark it running and submit its first stage."""
        try:
            request = convert.parse_pipeline_started(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        if not request.spec.pipeline:
            raise Poison(f"pipeline {request.run_id} has no steps")
        layout = [
            (step.name, stage_no, position)
            for stage_no, stage in enumerate(request.spec.pipeline)
            for position, step in enumerate(stage.steps)
        ]
        async with self._rt.pool.acquire() as conn, conn.transaction():
            added = await store.add_pipeline(
                conn,
                run_id=request.run_id,
                organisation=request.organisation,
                started_by=request.started_by,
                spec=convert.spec_to_bytes(request.spec),
                steps=layout,
                timeout_seconds=request.spec.timeout_seconds,
            )
            if not added:
                return  # a redelivery: the first delivery decided everything
            if request.spec.resume_from:
                reused = await store.reuse_succeeded(
                    conn, run_id=request.run_id, resumed=request.spec.resume_from, organisation=request.organisation
                )
                log.info("pipeline %s resumes %s: %d step(s) reused", request.run_id, request.spec.resume_from, reused)
            out = [self._parent_state(request.run_id, RunState.RUNNING, None, "")]
            pipeline = await store.lock_pipeline(conn, request.run_id)
            assert pipeline is not None
            out += await self._advance(conn, pipeline)
            rows = await store.add_outgoing(conn, out)
        log.info("pipeline %s: %d step(s) in %d stage(s)", request.run_id, len(layout), len(request.spec.pipeline))
        await self._publish(rows)

    async def handle_run_event(self, msg: Msg) -> None:
        """A run changed state: if it is a pipeline's step, record it and take the next decision."""
        try:
            event = convert.parse_state_changed(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        async with self._rt.pool.acquire() as conn:
            parent = await store.parent_of(conn, event.run_id)
        if parent is None:
            return  # not a step (most runs)

        async def apply(conn: Connection, pipeline: Pipeline) -> bool:
            return await self._apply_step_event(conn, pipeline, event)

        await self._decide(parent, apply)

    async def handle_cancel(self, msg: Msg) -> None:
        """A cancel request: if it names a pipeline, stop it (its running steps are cancelled, the rest skipped)."""
        try:
            run_id, _, reason = convert.parse_cancel(msg.data)
        except convert.DecodeError as exc:
            raise Poison(str(exc)) from exc
        async with self._rt.pool.acquire() as conn:
            if not await store.is_pipeline(conn, run_id):
                return

        async def apply(conn: Connection, pipeline: Pipeline) -> bool:
            if pipeline.state == "running":
                await store.set_pipeline(
                    conn, pipeline.run_id, state="running", reason=reason or "cancelled", cancel_requested=True
                )
            return True

        await self._decide(run_id, apply)

    async def expire(self) -> int:
        """Periodic: stop every running pipeline past its own timeout; it ends `timed_out` once its running
        steps have ended (as `-l` ends a pipeline whose timeout passed). Any replica may do it; the decision is
        taken under the pipeline's row lock, so two replicas stop it once."""
        async with self._rt.pool.acquire() as conn:
            late = await store.overdue(conn, limit=100)
        for run_id in late:

            async def apply(conn: Connection, pipeline: Pipeline) -> bool:
                if pipeline.state == "running" and not pipeline.cancel_requested:
                    timeout = self._spec(pipeline).timeout_seconds or 0.0
                    await store.mark_timed_out(conn, pipeline.run_id, f"pipeline timed out after {timeout:g} s")
                return True

            await self._decide(run_id, apply)
        return len(late)

    # Decisions ------------------------------------------------------------------------------------------

    async def _decide(self, run_id: str, change: Change) -> None:
        async with self._rt.pool.acquire() as conn, conn.transaction():
            pipeline = await store.lock_pipeline(conn, run_id)
            if pipeline is None or pipeline.state in ("succeeded", "failed", "cancelled", "timed_out"):
                return
            if not await change(conn, pipeline):
                return
            pipeline = await store.lock_pipeline(conn, run_id)
            assert pipeline is not None
            rows = await store.add_outgoing(conn, await self._advance(conn, pipeline))
        await self._publish(rows)

    async def _apply_step_event(self, conn: Connection, pipeline: Pipeline, event: StateEvent) -> bool:
        step = next((s for s in await store.steps(conn, pipeline.run_id) if s.child_run_id == event.run_id), None)
        if step is None or step.state in store.STEP_DONE or event.attempt < step.attempt:
            return False  # ended already, or an earlier attempt's late event
        if not event.state.terminal:
            if event.state in (RunState.LAUNCHING, RunState.RUNNING):
                await store.set_step(
                    conn, pipeline.run_id, step.name, state="running", attempt=event.attempt, at=event.at
                )
            # A step going from submitted to running decides nothing: its stage was submitted whole, and a stop
            # decided later reads the step's state as it is then (a step still submitted also gets the end that a
            # launcher may never report, see `_cancel_step`).
            return False
        spec = _step_spec(self._spec(pipeline), step.name)
        if retry_follows(event.state, event.attempt, spec.retries if spec is not None else 0):
            # The registry asked for the next attempt of the same run: the step goes on.
            await store.set_step(conn, pipeline.run_id, step.name, state="running", attempt=event.attempt + 1)
            return False
        await store.set_step(
            conn,
            pipeline.run_id,
            step.name,
            state=event.state.value,
            attempt=event.attempt,
            exit_code=event.exit_code,
            reason=event.reason,
            at=event.at,
        )
        return True

    async def _advance(self, conn: Connection, pipeline: Pipeline) -> list[Outgoing]:
        """What follows from the pipeline's steps as they are now: its next stage, its stop, or its end."""
        steps = await store.steps(conn, pipeline.run_id)
        out: list[Outgoing] = []
        state = pipeline.state
        bad = [s for s in steps if s.state in ENDED_BADLY]
        if state == "running" and (bad or pipeline.cancel_requested):
            if pipeline.timed_out:
                why = "the pipeline timed out"
            elif pipeline.cancel_requested:
                why = "the pipeline was cancelled"
            else:
                why = f"step {bad[0].name} {bad[0].state}"
            for step in steps:
                if step.state == "pending":
                    await store.set_step(conn, pipeline.run_id, step.name, state="skipped", reason=why)
                elif step.state in ACTIVE_STEP_STATES:
                    out += self._cancel_step(step, f"cancelled: {why}")
            await store.set_pipeline(conn, pipeline.run_id, state="stopping", reason=pipeline.reason or why)
            state = "stopping"
            steps = await store.steps(conn, pipeline.run_id)
        if state == "stopping":
            if any(s.state in ACTIVE_STEP_STATES for s in steps):
                return out  # wait for the cancelled steps to end
            return out + await self._finish(conn, pipeline, steps)
        stage = next((s.stage for s in steps if s.state != "succeeded"), None)
        if stage is None:
            return out + await self._finish(conn, pipeline, steps)
        pending = [s for s in steps if s.stage == stage and s.state == "pending"]
        if not pending:
            return out  # the stage runs
        parent_spec = self._spec(pipeline)
        # Every earlier step succeeded (else the pipeline would be stopping): their files, in step order.
        layers = [FileLayer(run_id=s.files_of, attempt=s.attempt) for s in steps if s.stage < stage]
        submitted: list[str] = []
        for step in pending:
            spec = _step_spec(parent_spec, step.name)
            if spec is None:
                continue
            child = spec.model_copy(
                update={
                    "layers": layers,
                    "artifacts": spec.artifacts.model_copy(update={"save_changed_files": True}),
                    "labels": {**spec.labels, PIPELINE_STEP_LABEL: step.name, PIPELINE_PARENT_LABEL: pipeline.run_id},
                }
            )
            request = bus_messages.StepRequest(
                parent_run_id=pipeline.run_id,
                organisation=pipeline.organisation,
                step=step.name,
                run_id=step.child_run_id,
                spec=child,
                started_by=pipeline.started_by,
            )
            out.append(Outgoing(request.key, self._rt.names.pipeline_step_requested, convert.step_requested(request)))
            submitted.append(step.name)
        if submitted:
            await store.mark_submitted(conn, pipeline.run_id, submitted)
        return out

    async def _finish(self, conn: Connection, pipeline: Pipeline, steps: list[store.Step]) -> list[Outgoing]:
        bad = next((s for s in steps if s.state in ENDED_BADLY and s.state != "cancelled"), None)
        bad = bad or next((s for s in steps if s.state in ENDED_BADLY), None)
        if pipeline.timed_out:
            state, exit_code, reason = RunState.TIMED_OUT, 124, pipeline.reason or "pipeline timed out"
        elif pipeline.cancel_requested:
            state, exit_code, reason = RunState.CANCELLED, None, pipeline.reason or "cancelled"
        elif bad is not None:
            detail = f" (exit code {bad.exit_code})" if bad.exit_code is not None else ""
            # As `-l` reports a failed pipeline: the first failed step's exit code (124 for a timeout).
            code = bad.exit_code or (124 if bad.state == "timed_out" else 1)
            state, exit_code, reason = RunState.FAILED, code, f"step {bad.name} {bad.state}{detail}"
        else:
            state, exit_code, reason = RunState.SUCCEEDED, 0, ""
        await store.set_pipeline(conn, pipeline.run_id, state=state.value, reason=reason)
        log.info("pipeline %s %s %s", pipeline.run_id, state.value, reason)
        end_id = bus_messages.log_end_msg_id(pipeline.run_id, 1, "pipeline")
        return [
            # The end of the parent's (empty) log first, as a launcher does, so a follower of the parent ends.
            Outgoing(
                end_id,
                self._rt.names.run_log(pipeline.run_id),
                convert.log_end(pipeline.run_id, 1, state, exit_code, reason),
            ),
            self._parent_state(pipeline.run_id, state, exit_code, reason),
        ]

    def _parent_state(self, run_id: str, state: RunState, exit_code: int | None, reason: str) -> Outgoing:
        return Outgoing(
            bus_messages.state_msg_id(run_id, 1, state),
            self._rt.names.run_state(state),
            convert.state_changed(run_id, 1, state, exit_code, reason),
        )

    def _cancel_step(self, step: store.Step, reason: str) -> list[Outgoing]:
        run_id, attempt = step.child_run_id, step.attempt
        out = [
            Outgoing(
                bus_messages.cancel_msg_id(run_id, attempt),
                self._rt.names.run_cancel_requested(run_id),
                convert.cancel_requested(run_id, attempt, reason),
            )
        ]
        if step.state == "submitted":
            # Its run may still wait for admission, where no launcher would see the cancel: end it as the api
            # ends a queued run it cancels (a launcher that already has it reports the same end).
            out.append(
                Outgoing(
                    bus_messages.log_end_msg_id(run_id, attempt, "pipeline"),
                    self._rt.names.run_log(run_id),
                    convert.log_end(run_id, attempt, RunState.CANCELLED, None, reason),
                )
            )
            out.append(
                Outgoing(
                    bus_messages.state_msg_id(run_id, attempt, RunState.CANCELLED),
                    self._rt.names.run_state(RunState.CANCELLED),
                    convert.state_changed(run_id, attempt, RunState.CANCELLED, None, reason),
                )
            )
        return out

    def _spec(self, pipeline: Pipeline) -> RunSpec:
        kept = self._specs.get(pipeline.run_id)
        if kept is not None:
            self._specs.move_to_end(pipeline.run_id)
            return kept
        spec = convert.spec_from_bytes(pipeline.spec)
        self._specs[pipeline.run_id] = spec
        while len(self._specs) > _KEPT_SPECS:
            self._specs.popitem(last=False)
        return spec

    # Publishing -----------------------------------------------------------------------------------------

    async def _publish(self, rows: list[store.OutboxRow]) -> None:
        """Publish what a decision wrote, after its commit; what fails here the relay publishes later."""
        if not rows:
            return
        try:
            await self._send(rows)
        except Exception:
            log.warning("publishing %d pipeline message(s) failed; the relay will retry", len(rows), exc_info=True)

    async def _send(self, rows: list[store.OutboxRow]) -> None:
        """Publish `rows` in order, except that the step requests of one stage go out together (they are
        independent runs; a parallel group of five then waits for one round of acknowledgements, not five)."""
        sent: list[int] = []
        try:
            for batch in _batches(rows, self._rt.names.pipeline_step_requested):
                results = await asyncio.gather(*(self._publish_row(row) for row in batch), return_exceptions=True)
                failure: Exception | None = None
                for row, result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        failure = failure or result
                    elif isinstance(result, BaseException):
                        # Not a publish that failed (a cancel): the relay publishes what was not sent.
                        failure = failure or RuntimeError(f"publishing {row.subject} was interrupted: {result!r}")
                    else:
                        sent.append(row.id)
                if failure is not None:
                    raise failure
        finally:
            if sent:
                async with self._rt.pool.acquire() as conn:
                    await store.delete_outbox(conn, sent)

    async def _publish_row(self, row: store.OutboxRow) -> None:
        await self._rt.js.publish(row.subject, row.payload, headers=row.headers, timeout=5.0)

    async def relay(self) -> int:
        """Publish messages whose decision committed but whose publish did not happen (a replica died, NATS was
        away). Claimed in a statement of their own, then published outside any transaction."""
        async with self._rt.pool.acquire() as conn:
            rows = await store.claim_outbox(
                conn,
                older_than_seconds=self._settings.pipeline_relay_after,
                hold_seconds=30.0,
                limit=200,
            )
        if rows:
            await self._send(rows)
        return len(rows)


def _batches(rows: list[store.OutboxRow], together: str) -> list[list[store.OutboxRow]]:
    """`rows` in order, in runs of consecutive rows on subject `together`; every other row alone."""
    batches: list[list[store.OutboxRow]] = []
    for row in rows:
        if batches and row.subject == together and batches[-1][-1].subject == together:
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def _step_spec(parent: RunSpec, name: str) -> RunSpec | None:
    for stage in parent.pipeline:
        for step in stage.steps:
            if step.name == name:
                return step.spec
    return None
