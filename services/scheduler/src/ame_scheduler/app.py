"""The scheduler service assembled: the cron ticker."""

from __future__ import annotations

from ame_platform.lifecycle import Component
from ame_platform.runtime import Runtime
from ame_scheduler.settings import SchedulerSettings
from ame_scheduler.ticker import Ticker

SERVICE = "scheduler"
MIGRATIONS = "ame_scheduler"


def build_components(settings: SchedulerSettings, runtime: Runtime) -> list[Component]:
    return [Ticker(runtime, settings)]
