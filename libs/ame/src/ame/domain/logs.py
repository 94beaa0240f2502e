"""Run output as clients see it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ame.domain.run_states import RunState

LogStreamName = Literal["stdout", "stderr", "system"]


class LogLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    stream: LogStreamName
    text: str
    at: datetime


class LogEnd(BaseModel):
    """The end of a run attempt's output and the state it ended in."""

    model_config = ConfigDict(frozen=True)

    state: RunState
    exit_code: int | None = None
    reason: str = ""
    total_lines: int = 0
