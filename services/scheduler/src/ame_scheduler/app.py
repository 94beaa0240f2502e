"""The scheduler service assembled: the cron ticker."""

from __future__ import annotations

from ame_platform.lifecycle import Component, Periodic
from ame_platform.runtime import Runtime
from ame_scheduler.settings import SchedulerSettings
from ame_scheduler.ticker import Ticker

SERVICE = "scheduler"
MIGRATIONS = "ame_scheduler"


def build_components(settings: SchedulerSettings, runtime: Runtime) -> list[Component]:
    return [Periodic("ticker", settings.tick_interval, Ticker(runtime, settings).tick)]
