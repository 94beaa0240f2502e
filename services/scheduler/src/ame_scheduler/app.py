"""The scheduler service assembled: the cron ticker, and retries (their requests and their launches)."""

from __future__ import annotations

from ame.domain import RunState
from ame_platform.bus.consumer import ConsumerSpec, Handler, PullConsumer
from ame_platform.bus.subjects import (
    SCHEDULER_MODEL_RUNS,
    SCHEDULER_MODELS,
    SCHEDULER_PIPELINE_CANCELS,
    SCHEDULER_PIPELINE_RUNS,
    SCHEDULER_PIPELINES,
    SCHEDULER_RETRIES,
    SCHEDULER_SCHEDULES,
)
from ame_platform.clock import clock_from
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime
from ame_scheduler.activation import Activation
from ame_scheduler.models import ModelSequencer
from ame_scheduler.pipelines.coordinator import Coordinator
from ame_scheduler.retries import Retrier
from ame_scheduler.settings import SchedulerSettings
from ame_scheduler.ticker import Ticker

SERVICE = "scheduler"
MIGRATIONS = "ame_scheduler"


def build_components(settings: SchedulerSettings, runtime: Runtime) -> list[Component]:
    retrier = Retrier(runtime, settings)
    requests = PullConsumer(
        runtime.js,
        ConsumerSpec(
            stream=runtime.names.events_stream,
            durable=SCHEDULER_RETRIES,
            filter_subject=runtime.names.run_retry_requested,
            concurrency=8,
        ),
        retrier.handle_request,
        name="retry-requests",
        deadletters=runtime.deadletters,
        tracer=runtime.telemetry.tracer("ame_scheduler"),
    )
    clock = clock_from(settings.clock)
    ticker = Ticker(runtime, settings, clock)
    project_schedules = PullConsumer(
        runtime.js,
        ConsumerSpec(
            stream=runtime.names.events_stream,
            durable=SCHEDULER_SCHEDULES,
            filter_subject=runtime.names.project_schedules,
            concurrency=4,
        ),
        Activation(runtime, clock).handle,
        name="project-schedules",
        deadletters=runtime.deadletters,
        tracer=runtime.telemetry.tracer("ame_scheduler"),
    )
    sequencer = ModelSequencer(runtime)
    model_requests = PullConsumer(
        runtime.js,
        ConsumerSpec(
            stream=runtime.names.events_stream,
            durable=SCHEDULER_MODELS,
            filter_subject=runtime.names.model_train_requested,
            concurrency=4,
        ),
        sequencer.handle_train_requested,
        name="model-requests",
        deadletters=runtime.deadletters,
        tracer=runtime.telemetry.tracer("ame_scheduler"),
    )
    model_runs = PullConsumer(
        runtime.js,
        ConsumerSpec(
            stream=runtime.names.events_stream,
            durable=SCHEDULER_MODEL_RUNS,
            filter_subject=runtime.names.run_state(RunState.SUCCEEDED),
            concurrency=8,
        ),
        sequencer.handle_run_succeeded,
        name="model-runs",
        deadletters=runtime.deadletters,
        tracer=runtime.telemetry.tracer("ame_scheduler"),
    )
    return [
        requests,
        project_schedules,
        model_requests,
        model_runs,
        *pipeline_components(settings, runtime),
        Periodic("retry-launcher", settings.retry_poll_interval, retrier.launch_due),
        Periodic("ticker", settings.tick_interval, ticker.tick),
        Periodic("fire-relay", settings.relay_interval, ticker.relay),
    ]


def pipeline_components(settings: SchedulerSettings, runtime: Runtime) -> list[Component]:
    """The pipeline coordinator: its three consumers (shared by every replica) and its outbox relay."""
    coordinator = Coordinator(runtime, settings)
    tracer = runtime.telemetry.tracer("ame_scheduler")

    def consumer(durable: str, subject: str, handler: Handler, name: str, concurrency: int) -> PullConsumer:
        return PullConsumer(
            runtime.js,
            ConsumerSpec(
                stream=runtime.names.events_stream, durable=durable, filter_subject=subject, concurrency=concurrency
            ),
            handler,
            name=name,
            deadletters=runtime.deadletters,
            tracer=tracer,
        )

    return [
        consumer(SCHEDULER_PIPELINES, runtime.names.pipeline_started, coordinator.handle_started, "pipelines", 8),
        consumer(
            SCHEDULER_PIPELINE_RUNS,
            runtime.names.run_states_wildcard,
            coordinator.handle_run_event,
            "pipeline-runs",
            settings.pipeline_concurrency,
        ),
        consumer(
            SCHEDULER_PIPELINE_CANCELS,
            runtime.names.run_cancel_wildcard,
            coordinator.handle_cancel,
            "pipeline-cancels",
            8,
        ),
        Periodic("pipeline-relay", settings.pipeline_relay_interval, coordinator.relay),
        Periodic("pipeline-timeouts", settings.pipeline_relay_interval, coordinator.expire),
    ]
