"""Run use cases shared by REST and gRPC: submit, read, list, cancel, and the registry fed by run events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

from ame import bus_messages
from ame.codecs import StateEvent
from ame.domain import Run, RunSpec, RunState, TriggerKind, new_run_id
from ame.domain.ids import prefix_digits
from ame.domain.limits import MAX_STORED_REASON_CHARS
from ame.domain.orchestrations import ORCHESTRATION_TASK_LABEL, RUN_TOKEN_VAULT
from ame.domain.principals import Principal
from ame_api import convert, organisations, pipeline_runs
from ame_api.admission import Admission, Refused
from ame_api.repositories import orchestrations as orchestrations_repo
from ame_api.repositories import runs as runs_repo
from ame_api.repositories import schedules as schedules_repo
from ame_api.repositories import tokens as tokens_repo
from ame_api.repositories.runs import NotFound
from ame_api.settings import ApiSettings
from ame_platform.bus.consumer import Poison, keep_in_hand
from ame_platform.bus.deadletters import DeadLetterQueue
from ame_platform.bus.publisher import headers_for
from ame_platform.db import Connection
from ame_platform.db.retry import with_connection
from ame_platform.faults import clean_text, is_transient
from ame_platform.runtime import Runtime

if TYPE_CHECKING:
    from ame_api.data_sets import DataSetService, Needed

log = logging.getLogger(__name__)

__all__ = ["Conflict", "InvalidRequest", "NotFound", "OutboxRelay", "RunService", "Withdrawn"]

# Below the registry consumer's ack wait (30 s), so the event is not redelivered while it is still retried here.
_REGISTRY_RETRY_SECONDS = 20.0


class InvalidRequest(ValueError):
    """The request cannot be served as asked (422 / INVALID_ARGUMENT)."""


def refuse_over_bus(runtime: Runtime, payload: bytes, what: str) -> None:
    """InvalidRequest when `payload` (with room for headers) is more than the bus carries: refused at the edge,
    never written to an outbox that could not publish it."""
    if len(payload) > runtime.nc.max_payload - 4096:
        raise InvalidRequest(
            f"{what} is {len(payload)} bytes encoded; the bus carries at most {runtime.nc.max_payload}"
        )


class Conflict(RuntimeError):
    """The request contradicts an earlier one (409 / ALREADY_EXISTS)."""


class Withdrawn(RuntimeError):
    """A submit's guard found, in the submit's own transaction, that the run must not be made."""


# Called in the submit's transaction before the run is recorded; False withdraws the submit (see `Withdrawn`).
Guard = Callable[[Connection], Awaitable[bool]]


@dataclass(frozen=True)
class Page:
    runs: list[Run]
    next_page_token: str


# (organisation, project, version id) -> the version's (manifest key, blob prefix) in the object store.
ProjectSources = Callable[[str, str, str], Awaitable[tuple[str, str]]]


class RunService:
    def __init__(
        self,
        runtime: Runtime,
        settings: ApiSettings,
        project_sources: ProjectSources | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._rt = runtime
        self._settings = settings
        self._project_sources = project_sources
        self.admission = admission or Admission(runtime, settings.admission)
        # Called with the run id when the registry records a run's end (PEACH loops start their next task).
        self.end_listeners: list[Callable[[str], None]] = []
        self._tracer = runtime.telemetry.tracer("ame_api")
        # Set by the app once built (it submits producing runs through this service).
        self.data_sets: DataSetService | None = None

    async def submit(
        self,
        principal: Principal,
        spec: RunSpec,
        *,
        trigger: TriggerKind = TriggerKind.API,
        parent_run_id: str = "",
        idempotency_key: str | None = None,
        run_id: str | None = None,
        data_set_output: bus_messages.DataSetOutput | None = None,
        guard: Guard | None = None,
    ) -> Run:
        """Record the run as queued; if admission admits it, ask a launcher for it in the same transaction
        (through the outbox), else it waits in the admission queue with the reason. A run that reads data sets
        not ready yet waits for them first (see `ame_api.data_sets`). A pipeline run is recorded and handed to the
        scheduler's coordinator instead, which runs its steps as child runs. `run_id` is for callers that chose
        the id beforehand (the scheduler's model sequencing); with an idempotency key, a repeat returns the run
        made first. A `guard` that returns False in the run's transaction raises `Withdrawn` and makes nothing."""
        if spec.layers or any(step.spec.layers for stage in spec.pipeline for step in stage.steps):
            raise InvalidRequest("layers are set by AME's pipeline coordinator, not by a client")
        run_id = run_id or new_run_id()
        with self._tracer.start_as_current_span("run submit", attributes={"ame.run_id": run_id}):
            return await self._submit(
                principal, run_id, spec, trigger, parent_run_id, idempotency_key, data_set_output, guard
            )

    async def submit_with_id(
        self,
        principal: Principal,
        run_id: str,
        spec: RunSpec,
        *,
        trigger: TriggerKind,
        parent_run_id: str,
        idempotency_key: str,
    ) -> Run:
        """A run whose id its requester chose (a pipeline step: the coordinator knows its steps' ids up front)."""
        with self._tracer.start_as_current_span("run submit", attributes={"ame.run_id": run_id}):
            return await self._submit(principal, run_id, spec, trigger, parent_run_id, idempotency_key)

    @property
    def runtime(self) -> Runtime:
        return self._rt

    @property
    def project_sources(self) -> ProjectSources | None:
        return self._project_sources

    async def apply_step_requested(self, msg: Msg) -> None:
        """Pipeline steps consumer: see `ame_api.pipeline_runs`."""
        await pipeline_runs.apply_step_requested(self, msg)

    async def _submit(
        self,
        principal: Principal,
        run_id: str,
        spec: RunSpec,
        trigger: TriggerKind,
        parent_run_id: str,
        idempotency_key: str | None,
        data_set_output: bus_messages.DataSetOutput | None = None,
        guard: Guard | None = None,
    ) -> Run:
        org = principal.organisation
        if spec.pipeline:
            if guard is not None:
                raise InvalidRequest("a guarded submit cannot be a pipeline")
            return await pipeline_runs.submit_pipeline(
                self, principal, run_id, spec, trigger, parent_run_id, idempotency_key
            )
        try:
            self.admission.check_spec(spec)
        except Refused as exc:
            raise InvalidRequest(str(exc)) from None
        source = None
        if spec.project_version_id:
            if self._project_sources is None:
                raise InvalidRequest("this server does not run project versions")
            source = await self._project_sources(org, spec.project, spec.project_version_id)
        needed: list[Needed] = []
        if spec.data_sets:
            if self.data_sets is None:
                raise InvalidRequest("this server does not serve data sets")
            needed = await self.data_sets.prepare(principal, spec)
        command = convert.launch_command(run_id, 1, org, spec, source, data_set_output)
        # RunSpec's own limits keep this far below the server's message size; this guards a changed limit.
        refuse_over_bus(self._rt, command, "the run")
        if parent_run_id:
            async with self._rt.pool.acquire() as conn:
                if await runs_repo.find_run(conn, parent_run_id, organisation=org) is None:
                    raise InvalidRequest(f"parent run {parent_run_id!r} not found")
        msg_id = bus_messages.launch_msg_id(run_id, 1)
        # Carries this span's context to the launcher, so the run's spans form one trace.
        headers = headers_for(msg_id)
        waiting = failing = None
        async with self._rt.pool.acquire() as conn, conn.transaction():
            if guard is not None and not await guard(conn):
                raise Withdrawn(f"run {run_id} withdrawn by its guard")
            if needed and self.data_sets is not None:
                # Locks the productions first, so one that ends meanwhile sees this run among its waiters.
                command, waiting, failing = await self.data_sets.hold(conn, org, needed, command)
            run, created = await runs_repo.create_run(
                conn,
                run_id=run_id,
                organisation=org,
                spec=spec,
                trigger=trigger,
                parent_run_id=parent_run_id,
                idempotency_key=idempotency_key,
                launch_command=command,
                started_by=principal.started_by,
            )
            if not created:
                if run.spec != spec:
                    raise Conflict(f"idempotency key {idempotency_key!r} was used for a different run ({run.id})")
                return run
            if waiting is not None and self.data_sets is not None:
                await self.data_sets.wait(conn, run_id, needed, waiting)
            elif failing is None:
                try:
                    submitted = await self.admission.on_submit(
                        conn,
                        run_id=run_id,
                        organisation=org,
                        spec=spec,
                        subject=self._rt.names.run_launch,
                        command=command,
                        headers=headers,
                    )
                except Refused as exc:
                    raise InvalidRequest(str(exc)) from None
        if failing is not None:
            await self.fail_queued(run_id, org, failing)
            return await self.get(principal, run_id)
        if waiting is not None:
            return run.model_copy(update={"reason": waiting})
        # Publish the launch if admitted, else admit now (a step shared with concurrent submits). If the publish
        # fails the relay publishes it later; Nats-Msg-Id makes a double publish harmless.
        reason = await self.admission.after_submit(run_id, submitted)
        return run.model_copy(update={"reason": reason})

    async def get(self, principal: Principal, run_id: str) -> Run:
        """The run, if it belongs to the caller's organisation (NotFound otherwise, as for an unknown id)."""
        async with self._rt.pool.acquire() as conn:
            return await runs_repo.get_run(conn, run_id, organisation=principal.organisation)

    async def list(
        self,
        principal: Principal,
        *,
        project: str | None = None,
        task: str | None = None,
        states: Sequence[RunState] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        id_prefix: str | None = None,
        organisation: str | None = None,
        parent_run_id: str | None = None,
    ) -> Page:
        """Newest first; `id_prefix` (at least 4 hex digits, hyphens ignored) keeps the runs whose id starts so."""
        org = organisations.resolve(principal, organisation)
        limit = min(page_size or self._settings.list_page_size, 1000)
        if page_token and not runs_repo.is_run_id(page_token):
            raise InvalidRequest("page_token is not one this server handed out")
        if parent_run_id and not runs_repo.is_run_id(parent_run_id):
            raise InvalidRequest(f"parent_run_id {parent_run_id[:80]!r} is not a run id")
        digits = None
        if id_prefix:
            try:
                digits = prefix_digits(id_prefix)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        async with self._rt.pool.acquire() as conn:
            runs = await runs_repo.list_runs(
                conn,
                organisation=org,
                project=project or None,
                task=task or None,
                states=states,
                before_id=page_token or None,
                limit=limit + 1,
                id_prefix=digits,
                parent_run_id=parent_run_id or None,
            )
        more = len(runs) > limit
        runs = runs[:limit]
        return Page(runs=runs, next_page_token=runs[-1].id if more else "")

    async def cancel(self, principal: Principal, run_id: str, reason: str = "") -> Run:
        """Cancel a run that has not ended. A queued run is cancelled here; a launched one by its launcher."""
        reason = clean_text(reason, MAX_STORED_REASON_CHARS) or "cancelled by request"
        run = await self.get(principal, run_id)
        if run.state.terminal:
            return run
        payload = convert.cancel_requested(run.id, run.attempt, reason)
        await self._rt.js.publish(
            self._rt.names.run_cancel_requested(run.id),
            payload,
            headers=headers_for(bus_messages.cancel_msg_id(run.id, run.attempt)),
        )
        if run.state == RunState.QUEUED:
            # No launcher may hold it yet; launchers also skip launch commands of runs cancelled meanwhile.
            await self._end_queued(run.id, run.attempt, RunState.CANCELLED, reason)
        return await self.get(principal, run_id)

    async def fail_queued(self, run_id: str, organisation: str, reason: str) -> None:
        """End a run that was never launched `failed` (a data set it reads failed), with the reason."""
        async with self._rt.pool.acquire() as conn:
            run = await runs_repo.find_run(conn, run_id, organisation=organisation)
        if run is not None and run.state == RunState.QUEUED:
            await self._end_queued(run.id, run.attempt, RunState.FAILED, reason)

    async def _end_queued(self, run_id: str, attempt: int, state: RunState, reason: str) -> None:
        event = convert.state_changed(run_id, attempt, state, None, reason)
        await self._publish_state(run_id, attempt, state, event)
        end_chunk = convert.end_chunk(run_id, attempt, state, None, reason)
        await self._rt.js.publish(
            self._rt.names.run_log(run_id),
            end_chunk,
            headers=headers_for(bus_messages.log_end_msg_id(run_id, attempt, state.value)),
        )
        async with self._rt.pool.acquire() as conn, conn.transaction():
            updated = await runs_repo.apply_state(
                conn,
                run_id=run_id,
                attempt=attempt,
                state=state,
                exit_code=None,
                reason=reason,
                at=convert.utcnow(),
            )
            if updated is not None:
                # Out of the admission queue, so it is never launched; a slot it held is freed.
                await self.admission.release(conn, run_id)
        if updated is not None:
            await self.admission.admit_quietly(f"ending {run_id}")

    async def _publish_state(self, run_id: str, attempt: int, state: RunState, payload: bytes) -> None:
        await self._rt.js.publish(
            self._rt.names.run_state(state),
            payload,
            headers=headers_for(bus_messages.state_msg_id(run_id, attempt, state)),
        )

    @property
    def deadletters(self) -> DeadLetterQueue:
        return self._rt.deadletters

    async def apply_event(self, msg: Msg) -> None:
        """Registry consumer: apply a run state event if it moves the run forward."""
        try:
            event = convert.parse_state_changed(msg.data)
        except ValueError as exc:
            raise Poison(str(exc)) from exc

        ended = False

        async def apply(conn: Connection) -> int | None:
            nonlocal ended
            outbox_id, ended = await self._apply(conn, event, clean_text(event.reason, MAX_STORED_REASON_CHARS))
            return outbox_id

        async def still_in_hand(exc: BaseException) -> None:
            await keep_in_hand(msg)

        # While the database is away the event waits here and is applied as soon as it
        # is back; past the deadline it goes back to JetStream (which redelivers it with a growing delay), so a
        # draining api is not held up for long.
        outbox_id = await with_connection(
            self._rt.pool,
            apply,
            what=f"applying {event.state.value} of run {event.run_id}",
            give_up_after=_REGISTRY_RETRY_SECONDS,
            on_fault=still_in_hand,
        )
        if outbox_id is not None:
            await self.publish_outboxed(outbox_id)
        if ended:
            for listener in self.end_listeners:
                listener(event.run_id)
            await self.admission.admit_quietly(f"the end of {event.run_id}")
        if self.data_sets is not None:
            # After the run's own state (also on a redelivery, which applies nothing): a production moves with it.
            await self.data_sets.on_run_event(event.run_id, event.state, event.reason)

    async def _apply(self, conn: Connection, event: StateEvent, reason: str) -> tuple[int | None, bool]:
        """Apply the event; when it ended an attempt that another follows, also write the scheduler's cue to the
        outbox in the same transaction (so a crash cannot lose a retry). Returns the outbox row's id, and whether
        the run ended (its admission slot is then freed in the same transaction; a retrying run keeps it)."""
        async with conn.transaction():
            applied = await runs_repo.apply_state(
                conn,
                run_id=event.run_id,
                attempt=event.attempt,
                state=event.state,
                exit_code=event.exit_code,
                reason=reason,
                at=event.at,
                launcher_id=event.launcher_id,
            )
            if applied is None:
                return None, False
            if applied.run.state.terminal:
                await self.admission.release(conn, event.run_id)
                if any(ref.vault == RUN_TOKEN_VAULT for ref in applied.run.spec.secrets):
                    # The run's own token (an orchestration task's) ends with the run.
                    await tokens_repo.revoke_run_tokens(conn, run_id=event.run_id)
                return None, True
            if applied.retry_attempt is None or applied.retry_launch is None:
                return None, False
            msg_id = bus_messages.retry_msg_id(event.run_id, applied.retry_attempt)
            payload = convert.retry_requested(event.run_id, applied.retry_attempt, event.state, applied.retry_launch)
            log.info(
                "run %s: attempt %d %s; attempt %d follows",
                event.run_id,
                event.attempt,
                event.state.value,
                applied.retry_attempt,
            )
            outbox_id = await runs_repo.add_outbox(
                conn,
                msg_id=msg_id,
                subject=self._rt.names.run_retry_requested,
                payload=payload,
                headers=headers_for(msg_id),
            )
            return outbox_id, False

    async def publish_outboxed(self, outbox_id: int) -> None:
        """Publish an outbox row now; if that fails the relay publishes it later (the msg id dedupes a double)."""
        try:
            async with self._rt.pool.acquire() as conn:
                row = await runs_repo.get_outbox(conn, outbox_id)
            if row is None:
                return  # the relay was first
            await self._rt.js.publish(row["subject"], row["payload"], headers=json.loads(row["headers"]), timeout=5.0)
            async with self._rt.pool.acquire() as conn:
                await runs_repo.delete_outbox(conn, outbox_id)
        except Exception:
            log.warning("publishing outbox message %d failed; the outbox relay will retry", outbox_id, exc_info=True)

    async def apply_dead_lettered_event(self, msg: Msg, why: str) -> None:
        """The registry gave up on a state event: still move the run to that state, so it never stays running.

        Only the state the event carries is applied (never another one), with its reason if that can be
        stored, else a note that it could not.
        """
        try:
            event = convert.parse_state_changed(msg.data)
        except ValueError:
            return  # nothing in it can be trusted
        reasons = [clean_text(event.reason, MAX_STORED_REASON_CHARS), clean_text(f"(reason not recorded: {why})", 500)]
        for reason in reasons:
            try:
                async with self._rt.pool.acquire() as conn:
                    outbox_id, ended = await self._apply(conn, event, reason)
                if outbox_id is not None:
                    await self.publish_outboxed(outbox_id)
                if ended:
                    await self.admission.admit_quietly(f"the end of {event.run_id}")
                return
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.warning(
                    "run %s: could not apply its dead-lettered %s event: %s", event.run_id, event.state.value, exc
                )

    async def apply_schedule_fired(self, msg: Msg) -> None:
        """Triggers consumer: a schedule slot came due; start its run once, whatever the redeliveries.

        The run belongs to the schedule's organisation and is started by its trigger principal. While a run the
        schedule started before has not ended, `overlap: skip` drops the slot and `overlap: queue` keeps the
        message in hand until that run ends, then starts this one.
        """
        try:
            fired = convert.parse_schedule_fired(msg.data)
        except ValueError as exc:
            raise Poison(str(exc)) from exc
        org = fired.organisation or self._settings.organisation
        spec = fired.spec
        where = {"organisation": org, "project": spec.project, "task": spec.task, "key": fired.key}
        waiting = False
        if fired.overlap in ("skip", "queue"):
            while True:
                async with self._rt.pool.acquire() as conn:
                    if await schedules_repo.fired_before(conn, organisation=org, key=fired.key):
                        break  # a redelivery: submit below returns the run it started
                    if not await schedules_repo.overlapping(conn, **where):
                        break
                    if fired.overlap == "skip":
                        log.info("schedule %s: slot %s skipped, its last run still runs", fired.schedule_id, fired.slot)
                        return
                    if not waiting and not await schedules_repo.take_waiting(conn, **where):
                        log.info("schedule %s: slot %s dropped, a slot waits already", fired.schedule_id, fired.slot)
                        return
                    waiting = True
                await keep_in_hand(msg)
                await asyncio.sleep(self._settings.schedule_queue_poll)
        guard: Guard | None = None
        if ORCHESTRATION_TASK_LABEL in spec.labels:
            # A fire already on its way when its orchestration task was killed (or deleted with its orchestration):
            # killed means no further run. Checked in the run's own transaction, so a kill committed first wins.
            async def task_alive(conn: Connection) -> bool:
                return not await orchestrations_repo.is_killed(
                    conn, organisation=org, project=spec.project, run_task=spec.task
                )

            guard = task_alive

        principal = Principal.trigger(org, "schedule")
        try:
            await self.submit(principal, spec, trigger=TriggerKind.SCHEDULE, idempotency_key=fired.key, guard=guard)
        except Withdrawn:
            log.info("schedule %s: slot %s dropped, its task was killed", fired.schedule_id, fired.slot)
        if fired.overlap == "queue":
            # Also after a redelivery that found its run made: the replica that made it may have died holding it.
            async with self._rt.pool.acquire() as conn:
                await schedules_repo.release_waiting(conn, **where)


class OutboxRelay:
    """Publishes outbox messages the submit fast path did not (NATS was down, the process died)."""

    def __init__(self, runtime: Runtime, settings: ApiSettings) -> None:
        self._rt = runtime
        self._settings = settings

    async def relay_once(self) -> int:
        sent = 0
        async with self._rt.pool.acquire() as conn, conn.transaction():
            rows = await runs_repo.claim_outbox(conn, older_than_seconds=self._settings.outbox_retry_after, limit=100)
            for row in rows:
                try:
                    await self._rt.js.publish(row["subject"], row["payload"], headers=json.loads(row["headers"]))
                except MaxPayloadError:
                    # Can never succeed; dropping it keeps it from blocking the messages behind it.
                    log.error("outbox message %s is over the bus's size limit; dropped", row["msg_id"])
                except Exception:
                    log.warning("outbox relay: publish failed; the rest waits for the next pass", exc_info=True)
                    break
                else:
                    sent += 1
                await runs_repo.delete_outbox(conn, row["id"])
        return sent
