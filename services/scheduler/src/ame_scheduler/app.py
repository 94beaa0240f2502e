"""The scheduler service assembled: the cron ticker, and retries (their requests and their launches)."""

from __future__ import annotations

from ame_platform.bus.consumer import ConsumerSpec, PullConsumer
from ame_platform.bus.subjects import SCHEDULER_RETRIES, SCHEDULER_SCHEDULES
from ame_platform.clock import clock_from
from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime
from ame_scheduler.activation import Activation
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
    return [
        requests,
        project_schedules,
        Periodic("retry-launcher", settings.retry_poll_interval, retrier.launch_due),
        Periodic("ticker", settings.tick_interval, ticker.tick),
        Periodic("fire-relay", settings.relay_interval, ticker.relay),
    ]
