"""The scheduler service assembled: the cron ticker, and retries (their requests and their launches)."""

from __future__ import annotations

from ame.domain import RunState
from ame_platform.bus.consumer import Handler, PullConsumer
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
    requests = runtime.events_consumer(
        SCHEDULER_RETRIES,
        runtime.names.run_retry_requested,
        retrier.handle_request,
        name="retry-requests",
        concurrency=8,
        tracer="ame_scheduler",
    )
    clock = clock_from(settings.clock)
    ticker = Ticker(runtime, settings, clock)
    project_schedules = runtime.events_consumer(
        SCHEDULER_SCHEDULES,
        runtime.names.project_schedules,
        Activation(runtime, clock).handle,
        name="project-schedules",
        concurrency=4,
        tracer="ame_scheduler",
    )
    sequencer = ModelSequencer(runtime)
    model_requests = runtime.events_consumer(
        SCHEDULER_MODELS,
        runtime.names.model_train_requested,
        sequencer.handle_train_requested,
        name="model-requests",
        concurrency=4,
        tracer="ame_scheduler",
    )
    model_runs = runtime.events_consumer(
        SCHEDULER_MODEL_RUNS,
        runtime.names.run_state(RunState.SUCCEEDED),
        sequencer.handle_run_succeeded,
        name="model-runs",
        concurrency=8,
        tracer="ame_scheduler",
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

    def consumer(durable: str, subject: str, handler: Handler, name: str, concurrency: int) -> PullConsumer:
        return runtime.events_consumer(
            durable, subject, handler, name=name, concurrency=concurrency, tracer="ame_scheduler"
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
