"""The logs service assembled: the archiver and the history responder."""

from __future__ import annotations

from ame_logs.archive import Archiver, HistoryResponder
from ame_logs.settings import LogsSettings
from ame_platform.lifecycle import Component
from ame_platform.runtime import Runtime

SERVICE = "logs"
MIGRATIONS = "ame_logs"


def build_components(settings: LogsSettings, runtime: Runtime) -> list[Component]:
    return [Archiver(runtime, settings), HistoryResponder(runtime, settings)]
