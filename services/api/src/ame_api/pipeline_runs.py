"""Pipeline runs at the api: recording a submitted pipeline, and creating its steps' runs when asked.

A pipeline run (a `RunSpec` with `pipeline`) is a parent with no command of its own. The api records it
`queued`, never admits or launches it, and writes `PipelineStarted` to the outbox in the same transaction; the
scheduler's coordinator (`ame_scheduler.pipelines`) then drives it: it asks for each step with
`PipelineStepRequested` (msg id `pipeline:<parent>:<step>`), and the api turns each request into a child run
whose idempotency key is that same id and whose run id is the one the coordinator chose, so a redelivered or
repeated request is the same run. The parent's states come from the coordinator as ordinary run events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from ame import bus_messages
from ame.domain import Run, RunSpec, RunState, TriggerKind
from ame.domain.principals import Principal
from ame_api import convert
from ame_api.admission import Refused
from ame_api.repositories import runs as runs_repo
from ame_platform.bus.consumer import Poison
from ame_platform.bus.publisher import headers_for

if TYPE_CHECKING:
    from ame_api.runs import RunService

log = logging.getLogger(__name__)

__all__ = ["apply_step_requested", "submit_pipeline"]

# Who starts a pipeline's steps (`runs.started_by` of a child: `trigger:pipeline`).
PIPELINE_TRIGGER = "pipeline"


async def submit_pipeline(
    service: RunService,
    principal: Principal,
    run_id: str,
    spec: RunSpec,
    trigger: TriggerKind,
    parent_run_id: str,
    idempotency_key: str | None,
) -> Run:
    from ame_api.runs import Conflict, InvalidRequest, refuse_over_bus

    org = principal.organisation
    if parent_run_id:
        raise InvalidRequest("a pipeline cannot be a step of another run")
    if spec.resume_from:
        async with service.runtime.pool.acquire() as conn:
            resumed = await runs_repo.find_run(conn, spec.resume_from, organisation=org)
        if resumed is None or not resumed.spec.pipeline:
            raise InvalidRequest(f"run {spec.resume_from!r} is not a pipeline run of this organisation")
        if not resumed.state.terminal or resumed.state == RunState.SUCCEEDED:
            raise InvalidRequest(
                f"pipeline run {spec.resume_from} is {resumed.state.value}; only a failed or cancelled one is resumed"
            )
    # Everything a step would be refused for is refused now, before any step runs.
    checked: set[tuple[str, str]] = set()
    for stage in spec.pipeline:
        for step in stage.steps:
            try:
                service.admission.check_spec(step.spec)
            except Refused as exc:
                raise InvalidRequest(f"step {step.name}: {exc}") from None
            version = (step.spec.project, step.spec.project_version_id)
            if version[1] and version not in checked:
                if service.project_sources is None:
                    raise InvalidRequest("this server does not run project versions")
                await service.project_sources(org, *version)
                checked.add(version)
    msg_id = bus_messages.pipeline_msg_id(run_id)
    payload = bus_messages.encode_pipeline_started(run_id, org, spec, principal.started_by)
    # Refused now, as a plain run's launch command is: a message the bus cannot carry would leave the pipeline
    # queued for ever (task arguments, a webhook's payload, travel once per step).
    refuse_over_bus(service.runtime, payload, "the pipeline with its steps (and their task arguments)")
    async with service.runtime.pool.acquire() as conn, conn.transaction():
        run, created = await runs_repo.create_run(
            conn,
            run_id=run_id,
            organisation=org,
            spec=spec,
            trigger=trigger,
            parent_run_id="",
            idempotency_key=idempotency_key,
            launch_command=None,
            started_by=principal.started_by,
        )
        if not created:
            if run.spec != spec:
                raise Conflict(f"idempotency key {idempotency_key!r} was used for a different run ({run.id})")
            return run
        outbox_id = await runs_repo.add_outbox(
            conn,
            msg_id=msg_id,
            subject=service.runtime.names.pipeline_started,
            payload=payload,
            headers=headers_for(msg_id),
        )
    await service.publish_outboxed(outbox_id)
    return run


async def apply_step_requested(service: RunService, msg: Msg) -> None:
    """Consumer of PipelineStepRequested: create the step's run (once, whatever the redeliveries).

    A step the api refuses (its project version was removed meanwhile, a limit changed) cannot be created: its
    run is reported `failed` with the reason under the id the coordinator chose, so the pipeline ends instead of
    waiting for a run that will never exist.
    """
    from ame_api.runs import Conflict, InvalidRequest

    try:
        request = bus_messages.parse_step_requested(msg.data)
    except bus_messages.DecodeError as exc:
        raise Poison(str(exc)) from exc
    principal = Principal.trigger(request.organisation, PIPELINE_TRIGGER)
    try:
        await service.submit_with_id(
            principal,
            request.run_id,
            request.spec,
            trigger=TriggerKind.PIPELINE,
            parent_run_id=request.parent_run_id,
            idempotency_key=request.key,
        )
    except (InvalidRequest, Conflict) as exc:
        reason = f"step {request.step} could not be started: {exc}"
        log.warning("pipeline %s: %s", request.parent_run_id, reason)
        event = convert.state_changed(request.run_id, 1, RunState.FAILED, None, reason)
        await service.runtime.js.publish(
            service.runtime.names.run_state(RunState.FAILED),
            event,
            headers=headers_for(bus_messages.state_msg_id(request.run_id, 1, RunState.FAILED)),
        )
